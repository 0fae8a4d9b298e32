// Usage and team keys, for admins: totals per key from the usage ledger, tokens per day by key and by model (bar charts), the
// limits each key hit (429s), and key management (make a key: shown once; revoke). Everything comes from the
// /admin/usage and /admin/keys endpoints, which answer admin keys (server.api_keys) only.

import { getJson, postJson } from "./api.js";
import { el, integer } from "./dom.js";

const PALETTE = ["#2f5bd3", "#1f8a4c", "#b7791f", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];

export class UsagePanel {
  constructor(root) {
    this.root = root;
    this.message = root.querySelector("#usage-message");
    this.since = root.querySelector("#usage-since");
    this.since.addEventListener("change", () => this.refresh());
    root.querySelector("#usage-reload").addEventListener("click", () => this.refresh());
    root.querySelector("#key-create").addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  async refresh() {
    const since = encodeURIComponent(this.since.value);
    let byKey, byStatus, byDay, byDayModel, keys;
    try {
      [byKey, byStatus, byDay, byDayModel, keys] = await Promise.all([
        getJson(`/admin/usage?since=${since}&by=key`),
        getJson(`/admin/usage?since=${since}&by=key,status`),
        getJson(`/admin/usage?since=${since}&by=day,key`),
        getJson(`/admin/usage?since=${since}&by=day,model`),
        getJson("/admin/keys"),
      ]);
    } catch (error) {
      const hint = error.status === 403 ? " — usage and keys need an admin key (server.api_keys)" : "";
      this.say(`${error}${hint}`);
      this.clear();
      return;
    }
    this.say("");
    this.renderTotals(byKey.rows, byStatus.rows);
    this.renderChart(byDay.rows, "key", "#usage-chart");
    this.renderChart(byDayModel.rows, "model", "#usage-chart-models");
    this.renderKeys(keys.keys);
  }

  clear() {
    for (const id of ["#usage-totals tbody", "#key-list tbody"]) this.root.querySelector(id).replaceChildren();
    for (const id of ["#usage-chart", "#usage-chart-models"]) this.root.querySelector(id).replaceChildren();
  }

  say(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  renderTotals(rows, statusRows) {
    const limited = new Map();
    for (const row of statusRows) {
      if (row.status === 429) limited.set(row.key, (limited.get(row.key) || 0) + row.requests);
    }
    // Top users first: most tokens.
    const sorted = [...rows].sort((a, b) => tokens(b) - tokens(a));
    const body = this.root.querySelector("#usage-totals tbody");
    body.replaceChildren(...sorted.map((row) => el("tr", { dataset: { key: row.key } },
      el("td", {}, row.key),
      el("td", { class: "num" }, integer(row.requests)),
      el("td", { class: "num" }, integer(row.errors)),
      el("td", { class: "num limited" }, integer(limited.get(row.key) || 0)),
      el("td", { class: "num" }, integer(row.prompt_tokens)),
      el("td", { class: "num" }, integer(row.completion_tokens)),
      el("td", { class: "num" }, row.mean_ttft_s === null ? "" : `${Math.round(row.mean_ttft_s * 1000)} ms`),
    )));
    if (!sorted.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no requests in this period")));
  }

  /** Tokens per UTC day, one stacked segment per `field` value (key or model): an SVG, no chart library. */
  renderChart(rows, field, selector) {
    rows = rows.filter((r) => tokens(r) > 0); // a series with no tokens (only refusals) has no bar
    const days = [...new Set(rows.map((r) => r.day))].sort();
    const keys = [...new Set(rows.map((r) => r[field] ?? "(none)"))].sort();
    const chart = this.root.querySelector(selector);
    if (!days.length) {
      chart.replaceChildren(el("p", { class: "empty" }, "no tokens in this period"));
      return;
    }
    const perDay = new Map(days.map((d) => [d, 0]));
    for (const row of rows) perDay.set(row.day, perDay.get(row.day) + tokens(row));
    const max = Math.max(1, ...perDay.values());
    const width = 640, height = 180, pad = 28, barGap = 6;
    const barWidth = Math.min(48, Math.max(6, (width - pad) / days.length - barGap));
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img", "aria-label": `tokens per day by ${field}` });
    days.forEach((day, i) => {
      let y = height;
      const x = pad + i * (barWidth + barGap);
      for (const row of rows.filter((r) => r.day === day)) {
        const h = (tokens(row) / max) * (height - 10);
        y -= h;
        const series = row[field] ?? "(none)";
        const rect = svgEl("rect", { x, y, width: barWidth, height: h, fill: PALETTE[keys.indexOf(series) % PALETTE.length], class: "bar", "data-series": series });
        rect.append(svgEl("title", {}, `${day} ${series}: ${integer(tokens(row))} tokens`));
        svg.append(rect);
      }
      svg.append(svgEl("text", { x: x + barWidth / 2, y: height + 14, "text-anchor": "middle", class: "axis" }, day.slice(5)));
    });
    svg.append(svgEl("text", { x: 0, y: 10, class: "axis" }, integer(max)));
    const legend = el("div", { class: "legend" }, keys.map((key, i) =>
      el("span", {}, el("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), key)));
    chart.replaceChildren(svg, legend);
  }

  renderKeys(keys) {
    const body = this.root.querySelector("#key-list tbody");
    body.replaceChildren(...keys.map((key) => el("tr", { dataset: { key: key.name, state: key.state } },
      el("td", {}, key.name),
      el("td", { class: `state ${key.state}` }, key.state),
      el("td", {}, el("code", {}, `…${key.hint}`)),
      el("td", {}, key.models.join(", ") || "all"),
      el("td", {}, limitsText(key)),
      el("td", {}, key.expires_at ? new Date(key.expires_at * 1000).toLocaleDateString() : "never"),
      el("td", {}, key.state === "active"
        ? el("button", { type: "button", class: "quiet revoke", onclick: () => this.revoke(key.name) }, "Revoke")
        : ""),
    )));
    if (!keys.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no team keys yet")));
  }

  async create() {
    const form = this.root.querySelector("#key-create");
    const value = (name) => form.elements[name].value.trim();
    const number = (name) => (value(name) ? Number(value(name)) : null);
    const body = {
      name: value("name"),
      models: value("models").split(",").map((m) => m.trim()).filter(Boolean),
      rpm: number("rpm"), tpm: number("tpm"), tokens_per_day: number("tokens_per_day"),
      max_concurrency: number("max_concurrency"), expires: value("expires") || null,
    };
    const shown = this.root.querySelector("#key-made");
    try {
      const made = await (await postJson("/admin/keys", body)).json();
      shown.replaceChildren(
        el("span", {}, `Key for ${made.name} — copy it now, it is not shown again: `),
        el("code", { id: "key-secret" }, made.key),
        el("button", { type: "button", class: "quiet", onclick: () => navigator.clipboard?.writeText(made.key) }, "Copy"),
      );
      shown.hidden = false;
      form.reset();
    } catch (error) {
      shown.replaceChildren(el("span", { class: "error" }, `${error}`));
      shown.hidden = false;
    }
    await this.refresh();
  }

  async revoke(name) {
    try {
      await postJson(`/admin/keys/${encodeURIComponent(name)}/revoke`);
    } catch (error) {
      this.say(`${error}`);
    }
    await this.refresh();
  }
}

function tokens(row) {
  return (row.prompt_tokens || 0) + (row.completion_tokens || 0);
}

function limitsText(key) {
  const parts = [["rpm", key.rpm], ["tpm", key.tpm], ["tokens/day", key.tokens_per_day], ["concurrency", key.max_concurrency]]
    .filter(([, v]) => v !== null).map(([label, v]) => `${label} ${integer(v)}`);
  return parts.join(" · ") || "none";
}

// The SVG namespace as the HTML parser gives it (the console's files spell out no URL at all).
const SVG_NS = (() => {
  const box = document.createElement("div");
  box.innerHTML = "<svg></svg>";
  return box.firstChild.namespaceURI;
})();

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
}
