// The host panel: CPU use and load, RAM, and each GPU's memory, utilisation, temperature, power and the models
// holding its memory, from GET /admin/host (admin keys only; NVML on the gateway's side), polled every 5 s.

import { getJson } from "./api.js";
import { el } from "./dom.js";

const POLL_MS = 5000;
const GIB = 1024 ** 3;

export class HostPanel {
  constructor(root) {
    this.root = root;
    this.body = root.querySelector("#host-body");
    this.polling = false;
  }

  start() {
    if (this.polling) return;
    this.polling = true;
    const tick = async () => {
      await this.refresh();
      setTimeout(tick, POLL_MS);
    };
    tick();
  }

  async refresh() {
    let host;
    try {
      host = await getJson("/admin/host");
    } catch (error) {
      const hint = error.status === 403 ? " — the host panel needs an admin key (server.api_keys)" : "";
      this.body.replaceChildren(el("p", { class: "empty" }, `${error}${hint}`));
      return;
    }
    this.render(host);
  }

  render(host) {
    const { cpu, memory } = host;
    const rows = [
      meterRow("CPU", cpu.percent, cpu.percent == null ? "—" :
        `${cpu.percent.toFixed(0)} % of ${cpu.cores} cores · load ${cpu.load.map((v) => v.toFixed(2)).join(" ")}`, "cpu"),
      meterRow("RAM", percentOf(memory.used_bytes, memory.total_bytes),
        memory.total_bytes ? `${gib(memory.used_bytes)} / ${gib(memory.total_bytes)} GiB used` : "—", "ram"),
    ];
    const gpus = host.gpus.map((gpu) => gpuView(gpu));
    const none = host.gpus.length ? null :
      el("p", { class: "muted small", id: "host-no-gpu" }, host.nvml === "ok" ? "NVML sees no GPU" : `no GPU: NVML ${host.nvml}`);
    this.body.replaceChildren(el("table", { class: "grid compact host" }, el("tbody", {}, rows)), ...gpus, none);
  }

  clear() {
    this.body.replaceChildren();
  }
}

function meterRow(label, percent, text, name) {
  return el("tr", { dataset: { host: name } },
    el("th", {}, label),
    el("td", {}, el("div", { class: `meter wide${percent > 90 ? " hot" : ""}` }, el("span", { style: `width:${percent ?? 0}%` }))),
    el("td", { class: "figure" }, text));
}

function gpuView(gpu) {
  const memoryPercent = percentOf(gpu.memory_used_bytes, gpu.memory_total_bytes);
  const facts = [
    gpu.utilization_percent != null ? `${gpu.utilization_percent} % busy` : null,
    gpu.temperature_c != null ? `${gpu.temperature_c} °C` : null,
    gpu.power_w != null ? `${gpu.power_w.toFixed(0)} W` : null,
  ].filter(Boolean).join(" · ");
  const holders = gpu.processes.map((p) =>
    el("li", {}, p.model ? el("strong", {}, p.model) : `pid ${p.pid}`, p.used_bytes != null ? ` ${gib(p.used_bytes)} GiB` : ""));
  return el("div", { class: "gpu", dataset: { gpu: String(gpu.index) } },
    el("div", { class: "gpu-name" }, el("strong", {}, `GPU ${gpu.index}`), ` ${gpu.name}`, facts ? el("span", { class: "muted small" }, ` · ${facts}`) : null),
    el("table", { class: "grid compact host" }, el("tbody", {},
      meterRow("Memory", memoryPercent,
        gpu.memory_total_bytes != null ? `${gib(gpu.memory_used_bytes)} / ${gib(gpu.memory_total_bytes)} GiB` : "not reported (unified memory?)", "gpu-memory"),
      meterRow("Busy", gpu.utilization_percent, gpu.utilization_percent != null ? `${gpu.utilization_percent} %` : "—", "gpu-busy"))),
    holders.length ? el("ul", { class: "gpu-processes small" }, holders) : null);
}

function percentOf(part, whole) {
  return part == null || !whole ? null : Math.round((100 * part) / whole);
}

function gib(bytes) {
  return (bytes / GIB).toFixed(1);
}
