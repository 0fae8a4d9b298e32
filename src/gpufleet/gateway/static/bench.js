// The latest `gpufleet bench` run: its PNG plots and its report.json, from /ui/bench/latest.
// Plots are fetched with the key and shown from blob URLs (an <img src> could not send the key).

import { call, getJson } from "./api.js";
import { el, withCode } from "./dom.js";

export class BenchPanel {
  constructor(root) {
    this.body = root.querySelector("#bench-body");
    this.urls = [];
    root.querySelector("#bench-reload").addEventListener("click", () => this.refresh());
  }

  async refresh() {
    const stale = this.urls; // the blob URLs of the plots shown now, freed once they are replaced
    this.urls = [];
    await this.render();
    for (const url of stale) URL.revokeObjectURL(url);
  }

  async render() {
    let summary;
    try {
      summary = await getJson("/ui/bench/latest");
    } catch (error) {
      this.show(el("p", { class: "empty" }, `bench report unavailable — ${error}`));
      return;
    }
    if (!summary.report && !summary.error) {
      this.show(el("p", { class: "empty", id: "bench-empty" }, withCode(summary.hint)));
      return;
    }
    const figures = await Promise.all(summary.plots.map((name) => this.figure(name)));
    const written = summary.modified ? new Date(summary.modified * 1000).toLocaleString() : "";
    this.show(
      el("p", { class: "muted" }, `written ${written} · ${summary.plots.length} plot(s)`),
      summary.error ? el("p", { class: "error" }, summary.error) : null,
      el("div", { class: "plots" }, figures),
      summary.report
        ? el("details", { class: "report" }, el("summary", {}, "report.json"), el("pre", {}, JSON.stringify(summary.report, null, 2)))
        : null,
    );
  }

  async figure(name) {
    try {
      const blob = await (await call(`/ui/bench/latest/${encodeURIComponent(name)}`)).blob();
      const url = URL.createObjectURL(blob);
      this.urls.push(url);
      return el("figure", {}, el("img", { src: url, alt: name }), el("figcaption", {}, name));
    } catch (error) {
      return el("figure", {}, el("p", { class: "error" }, `${name}: ${error}`));
    }
  }

  show(...nodes) {
    this.body.replaceChildren(...nodes.filter(Boolean));
  }
}
