// The engine log view: the last lines a model's engine printed (stdout and stderr, as the supervisor keeps
// them), from GET /admin/models/NAME/logs (admin keys only; credentials masked by the gateway). "Follow"
// reads them again every 2 s while the view is open.

import { getJson } from "./api.js";
import { el } from "./dom.js";

const FOLLOW_MS = 2000;

export class EngineLogView {
  constructor(root) {
    this.root = root;
    this.title = root.querySelector("#engine-log-title");
    this.count = root.querySelector("#engine-log-lines");
    this.follow = root.querySelector("#engine-log-follow");
    this.text = root.querySelector("#engine-log-text");
    this.model = null;
    this.timer = null;
    root.querySelector("#engine-log-refresh").addEventListener("click", () => this.refresh());
    root.querySelector("#engine-log-close").addEventListener("click", () => this.close());
    this.count.addEventListener("change", () => this.refresh());
    this.follow.addEventListener("change", () => this.schedule());
  }

  open(model) {
    this.model = model;
    this.root.hidden = false;
    this.refresh();
    this.root.scrollIntoView({ block: "nearest" });
  }

  close() {
    this.model = null;
    this.root.hidden = true;
    clearTimeout(this.timer);
  }

  schedule() {
    clearTimeout(this.timer);
    if (this.model && this.follow.checked) this.timer = setTimeout(() => this.refresh(), FOLLOW_MS);
  }

  async refresh() {
    if (!this.model) return;
    const model = this.model;
    const atBottom = this.text.scrollTop + this.text.clientHeight >= this.text.scrollHeight - 4;
    try {
      const log = await getJson(`/admin/models/${encodeURIComponent(model)}/logs?lines=${this.count.value}`);
      if (model !== this.model) return; // another model was opened meanwhile
      const state = [log.state, log.pid ? `pid ${log.pid}` : null, log.exit_code != null ? `exit code ${log.exit_code}` : null];
      this.title.replaceChildren(el("strong", {}, log.model), el("span", { class: "muted small" }, ` ${state.filter(Boolean).join(" · ")}`));
      this.root.dataset.model = log.model;
      this.text.textContent = log.lines.length ? log.lines.join("\n") : "(nothing captured yet: the engine has not been started since the gateway started)";
      this.text.title = log.log_path ? `whole log: ${log.log_path}` : "";
      if (atBottom) this.text.scrollTop = this.text.scrollHeight; // keep following the end unless scrolled up
    } catch (error) {
      const hint = error.status === 403 ? " — engine logs need an admin key (server.api_keys)" : "";
      this.title.replaceChildren(el("strong", {}, model));
      this.text.textContent = `${error}${hint}`;
    }
    this.schedule();
  }
}
