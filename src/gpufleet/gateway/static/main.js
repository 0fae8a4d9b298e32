// Wires the console together: the API key form, the banner for key errors, and the panels.

import { apiKey, setApiKey } from "./api.js";
import { BenchPanel } from "./bench.js";
import { ChatPanel } from "./chat.js";
import { FleetPanel } from "./fleet.js";
import { HostPanel } from "./host.js";
import { EngineLogView } from "./logs.js";
import { UsagePanel } from "./usage.js";

const banner = document.querySelector("#banner");
const keyForm = document.querySelector("#key-form");
const keyInput = document.querySelector("#api-key");

const logs = new EngineLogView(document.querySelector("#engine-log"));
const fleet = new FleetPanel(document.querySelector("#fleet"), { onLog: (name) => logs.open(name) });
const host = new HostPanel(document.querySelector("#host"));
const chat = new ChatPanel(document.querySelector("#chat"));
const bench = new BenchPanel(document.querySelector("#bench"));
const usage = new UsagePanel(document.querySelector("#usage"));

// Any 401 means the gateway has api_keys and ours is missing or wrong: say so, and show nothing stale.
document.addEventListener("auth-failed", (event) => {
  const hint = apiKey() ? "Check the key above." : "Enter the gateway's API key above.";
  banner.textContent = `${event.detail} — ${hint}`;
  banner.hidden = false;
  fleet.clear();
  usage.clear();
  host.clear();
});
document.addEventListener("auth-ok", () => {
  banner.hidden = true;
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  reload();
});
document.querySelector("#forget-key").addEventListener("click", () => {
  setApiKey("");
  keyInput.value = "";
  reload();
});

function reload() {
  fleet.refresh();
  chat.loadModels();
  bench.refresh();
  usage.refresh();
  host.refresh();
  logs.refresh();
}

keyInput.value = apiKey();
chat.loadModels();
bench.refresh();
usage.refresh();
fleet.start();
host.start();
