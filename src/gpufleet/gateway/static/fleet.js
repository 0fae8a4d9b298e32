// The fleet panel: every model's state from GET /status, refreshed live, with start/stop/swap buttons.
//
// Live by polling rather than server-sent events: the browser's EventSource cannot send an Authorization
// header, so an SSE feed would need the key in the URL (where it leaks into logs); /status is a cheap
// in-memory snapshot, so asking every couple of seconds costs the gateway next to nothing.

import { getJson, postJson } from "./api.js";
import { el, integer, seconds } from "./dom.js";

const POLL_MS = 2000;
const POLL_BUSY_MS = 700; // while an engine starts or stops, so its phases show as they pass
const BUSY_STATES = new Set(["starting", "stopping", "backoff"]);
const STARTABLE = new Set(["stopped", "failed", "backoff", "sleeping"]);
const STOPPABLE = new Set(["ready", "starting", "backoff", "sleeping", "failed"]);

export class FleetPanel {
  /** `onLog(name)`: show the engine log of model `name` (the log button of each engine's row). */
  constructor(root, { onLog } = {}) {
    this.root = root;
    this.onLog = onLog;
    this.modelsBody = root.querySelector("#models tbody");
    this.groupsBody = root.querySelector("#swap-groups tbody");
    this.targetsBody = root.querySelector("#targets tbody");
    this.updated = root.querySelector("#fleet-updated");
    this.message = root.querySelector("#fleet-message");
    this.rows = new Map(); // model name -> {row, cells, buttons, pending}
    this.polling = false;
    this.busy = false;
  }

  /** Poll /status until the page closes; a failed poll shows why and tries again. */
  start() {
    if (this.polling) return;
    this.polling = true;
    const tick = async () => {
      await this.refresh();
      setTimeout(tick, this.busy ? POLL_BUSY_MS : POLL_MS);
    };
    tick();
  }

  async refresh() {
    try {
      const status = await getJson("/status");
      this.render(status);
      this.updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      this.updated.textContent = error.status ? `status: ${error}` : `gateway unreachable: ${error.message}`;
    }
  }

  render(status) {
    const seen = new Set();
    for (const model of status.models) {
      seen.add(model.name);
      this.renderModel(model);
    }
    for (const [name, entry] of this.rows) {
      if (!seen.has(name)) {
        entry.row.remove();
        this.rows.delete(name);
      }
    }
    this.busy = status.models.some((m) => BUSY_STATES.has(m.state)) || [...this.rows.values()].some((e) => e.pending);
    this.renderSwapGroups(status.swap_groups || {});
    this.renderTargets(status.targets || []);
  }

  // Rows are created once and updated in place, so a button under the pointer is never replaced mid-click.
  rowFor(model) {
    let entry = this.rows.get(model.name);
    if (entry) return entry;
    const cells = {};
    for (const key of ["name", "engine", "state", "phase", "kv", "inFlight", "restarts", "error", "actions"]) {
      cells[key] = el("td", { class: key });
    }
    cells.inFlight.classList.add("num");
    cells.restarts.classList.add("num");
    const buttons = {};
    if (model.state !== "remote") {
      for (const action of ["start", "stop", "swap"]) {
        buttons[action] = el("button", { type: "button", class: `small ${action}`, dataset: { action } }, action);
        buttons[action].addEventListener("click", () => this.act(model.name, action));
        cells.actions.append(buttons[action]);
      }
      buttons.log = el("button", { type: "button", class: "small quiet log", title: "the engine's last output lines" }, "log");
      buttons.log.addEventListener("click", () => this.onLog?.(model.name));
      cells.actions.append(buttons.log);
    }
    const row = el("tr", { dataset: { model: model.name } }, Object.values(cells));
    this.modelsBody.append(row);
    entry = { row, cells, buttons, pending: null };
    this.rows.set(model.name, entry);
    return entry;
  }

  renderModel(model) {
    const { row, cells, buttons, pending } = this.rowFor(model);
    row.dataset.state = model.state;
    cells.name.replaceChildren(
      el("strong", {}, model.name),
      ...(model.aliases?.length ? [el("div", { class: "muted small" }, `aka ${model.aliases.join(", ")}`)] : []),
      ...(model.swap_group ? [el("div", { class: "muted small" }, `swap group ${model.swap_group}`)] : []),
    );
    cells.engine.textContent = model.engine;
    cells.state.replaceChildren(el("span", { class: `badge state-${model.state}` }, model.state));
    cells.phase.replaceChildren(...phaseView(model, pending));
    cells.kv.replaceChildren(...kvView(model));
    cells.inFlight.textContent = model.in_flight === undefined ? "" :
      `${model.in_flight}${model.queued ? ` (+${model.queued} queued)` : ""}`;
    cells.restarts.textContent = model.restarts ?? "";
    cells.error.textContent = model.last_error || "";
    cells.error.title = model.last_error || "";
    if (model.state === "remote") {
      cells.actions.replaceChildren(el("span", { class: "muted small" }, model.base_url || "remote"));
      return;
    }
    buttons.start.disabled = Boolean(pending) || !STARTABLE.has(model.state);
    buttons.stop.disabled = Boolean(pending) || !STOPPABLE.has(model.state);
    buttons.swap.hidden = !model.swap_group;
    buttons.swap.disabled = Boolean(pending) || model.state === "ready";
  }

  /** POST /admin/models/NAME/ACTION; start and swap answer once the model is ready, so this can take a while. */
  async act(name, action) {
    const entry = this.rows.get(name);
    entry.pending = action;
    for (const button of [entry.buttons.start, entry.buttons.stop, entry.buttons.swap]) button.disabled = true;
    this.busy = true; // the next polls come fast, so the phases of the start or stop show while we wait
    this.refresh();
    this.say("");
    try {
      await postJson(`/admin/models/${encodeURIComponent(name)}/${action}`);
    } catch (error) {
      this.say(`${action} ${name} failed — ${error}`);
    } finally {
      entry.pending = null;
      await this.refresh();
    }
  }

  say(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  renderSwapGroups(groups) {
    const rows = Object.entries(groups).map(([name, g]) =>
      el("tr", {},
        el("td", {}, el("strong", {}, name), g.swapping ? el("span", { class: "badge state-starting" }, "swapping") : null),
        el("td", {}, g.budget_mib == null ? "no budget" : `${integer(g.used_mib)} / ${integer(g.budget_mib)} MiB`),
        el("td", {}, (g.up || []).join(", ") || "—"),
        el("td", { class: "num" }, `${g.queued}${g.max_queue != null ? ` / ${g.max_queue}` : ""}`),
        el("td", { class: "num" }, String(g.swaps)),
        el("td", {}, (g.last_freed || []).map((f) => `${f.model} (${f.how})`).join(", ") || "—"),
      ));
    this.groupsBody.replaceChildren(...(rows.length ? rows : [emptyRow(6, "no swap groups configured")]));
  }

  renderTargets(targets) {
    const rows = targets.map((t) =>
      el("tr", { dataset: { target: t.model } },
        el("td", {}, t.target),
        el("td", {}, t.healthy
          ? el("span", { class: "badge state-ready" }, "healthy")
          : el("span", { class: "badge state-backoff" }, `cooldown ${seconds(t.cooldown_until_s)}`)),
        el("td", { class: "num" }, String(t.in_flight)),
        el("td", { class: "num" }, String(t.served)),
        el("td", { class: "num" }, String(t.failures)),
        el("td", { class: "num" }, String(t.cooldowns)),
        el("td", { class: "error", title: t.last_error || "" }, t.last_error || ""),
      ));
    this.targetsBody.replaceChildren(...(rows.length ? rows : [emptyRow(7, "no targets")]));
  }

  clear() {
    for (const entry of this.rows.values()) entry.row.remove();
    this.rows.clear();
    this.groupsBody.replaceChildren();
    this.targetsBody.replaceChildren();
  }
}

function phaseView(model, pending) {
  if (pending) return [el("span", {}, `${pending}…`), el("div", { class: "progress busy" })];
  const text = model.phase || "";
  if (model.state === "starting" || model.state === "stopping") {
    return [el("span", {}, text || model.state), el("div", { class: "progress busy" })];
  }
  if (model.state === "ready") {
    const uptime = model.uptime_s != null ? `up ${seconds(model.uptime_s)}` : "";
    return [el("span", {}, [text !== "ready" ? text : "", uptime].filter(Boolean).join(" · ") || "ready")];
  }
  if (model.state === "stopped" && model.idle_ttl_s) return [el("span", { class: "muted" }, `idle TTL ${seconds(model.idle_ttl_s)}`)];
  return [el("span", {}, text || "—")];
}

function kvView(model) {
  const usage = model.engine_metrics?.kv_cache_usage;
  const capacity = model.kv_cache?.tokens;
  if (usage == null && capacity == null) return [el("span", { class: "muted" }, "—")];
  const parts = [];
  if (usage != null) {
    const percent = Math.round(usage * 100);
    parts.push(el("span", {}, `${percent} %`));
    parts.push(el("div", { class: `meter${percent > 85 ? " hot" : ""}` }, el("span", { style: `width:${percent}%` })));
  }
  if (capacity != null) parts.push(el("div", { class: "muted small" }, `${integer(capacity)} tokens (${model.kv_cache.device})`));
  return parts;
}

function emptyRow(span, text) {
  return el("tr", {}, el("td", { colspan: String(span), class: "muted" }, text));
}
