// The latest `gpufleet bench` run: its PNG plots and its report.json, from /ui/bench/latest.
// Plots are fetched with the key and shown from blob URLs (an <img src> could not send the key). A click on a
// plot opens it full size in a dialog (Esc, the Close button or a click beside it closes it).

import { call, getJson } from "./api.js";
import { el, withCode } from "./dom.js";

export class BenchPanel {
  constructor(root) {
    this.body = root.querySelector("#bench-body");
    this.urls = [];
    root.querySelector("#bench-reload").addEventListener("click", () => this.refresh());
    this.viewer = document.querySelector("#plot-viewer");
    this.viewer.querySelector("button.close").addEventListener("click", () => this.viewer.close());
    // A click on the backdrop lands on the dialog itself; one on the plot lands on the image.
    this.viewer.addEventListener("click", (event) => {
      if (event.target === this.viewer) this.viewer.close();
    });
  }

  open(url, name) {
    const img = this.viewer.querySelector("img");
    img.src = url;
    img.alt = name;
    this.viewer.querySelector(".caption").textContent = name;
    this.viewer.showModal();
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
      const plot = el("img", { src: url, alt: name, title: "click to open full size", tabIndex: 0 });
      plot.addEventListener("click", () => this.open(url, name));
      plot.addEventListener("keydown", (event) => {
        if (event.key === "Enter") this.open(url, name);
      });
      return el("figure", {}, plot, el("figcaption", {}, name));
    } catch (error) {
      return el("figure", {}, el("p", { class: "error" }, `${name}: ${error}`));
    }
  }

  show(...nodes) {
    this.body.replaceChildren(...nodes.filter(Boolean));
  }
}
