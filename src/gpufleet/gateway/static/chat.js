// The chat playground: pick a model, route, alias, persona or `auto` from /v1/models, and stream an answer
// from /v1/chat/completions (fetch + ReadableStream: EventSource can neither POST nor send the key).
// Reasoning (reasoning_content) shows in a collapsible block; tool calls show as name + arguments. The answer
// renders as markdown (markdown.js: DOM nodes only, never the model's text as HTML); under it, the time to its
// first token and its decode rate as this browser saw them.

import { getJson, postJson, sseData } from "./api.js";
import { el } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

export class ChatPanel {
  constructor(root) {
    this.form = root.querySelector("#chat-form");
    this.picker = root.querySelector("#chat-model");
    this.log = root.querySelector("#chat-log");
    this.input = root.querySelector("#chat-input");
    this.send = root.querySelector("#chat-send");
    this.cancel = root.querySelector("#chat-cancel");
    this.fields = {
      temperature: root.querySelector("#chat-temperature"),
      maxTokens: root.querySelector("#chat-max-tokens"),
      seed: root.querySelector("#chat-seed"),
      system: root.querySelector("#chat-system"),
      tools: root.querySelector("#chat-tools"),
    };
    this.messages = []; // the conversation so far, as sent to the API
    this.abort = null;
    this.emptyNote = this.log.querySelector(".empty");

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.ask();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) this.form.requestSubmit();
    });
    this.cancel.addEventListener("click", () => this.abort?.abort());
    root.querySelector("#chat-clear").addEventListener("click", () => this.clear());
  }

  /** Fill the picker from /v1/models, grouped the way the gateway resolves names. */
  async loadModels() {
    const previous = this.picker.value;
    let listing;
    try {
      listing = await getJson("/v1/models");
    } catch (error) {
      const why = error.status === 401 ? "enter the API key" : String(error);
      this.picker.replaceChildren(el("option", { value: "" }, `(no models: ${why})`));
      return;
    }
    const groups = { "Models and routes": [], Aliases: [], Personas: [], Auto: [] };
    for (const entry of listing.data) {
      if (entry.alias_of) groups.Aliases.push(el("option", { value: entry.id }, `${entry.id} → ${entry.alias_of}`));
      else if (entry.persona_of) groups.Personas.push(el("option", { value: entry.id }, `${entry.id} (persona on ${entry.persona_of})`));
      else if (entry.tiers) groups.Auto.push(el("option", { value: entry.id }, "auto (complexity tiers)"));
      else groups["Models and routes"].push(el("option", { value: entry.id }, entry.id));
    }
    this.picker.replaceChildren(
      ...Object.entries(groups)
        .filter(([, options]) => options.length)
        .map(([label, options]) => el("optgroup", { label }, options)),
    );
    if ([...this.picker.options].some((option) => option.value === previous)) this.picker.value = previous;
  }

  clear() {
    this.abort?.abort();
    this.messages = [];
    this.log.replaceChildren(this.emptyNote);
  }

  request() {
    const body = {
      model: this.picker.value,
      messages: [...this.messages],
      stream: true,
      stream_options: { include_usage: true },
    };
    const system = this.fields.system.value.trim();
    if (system) body.messages.unshift({ role: "system", content: system });
    if (this.fields.temperature.value !== "") body.temperature = Number(this.fields.temperature.value);
    if (this.fields.maxTokens.value !== "") body.max_tokens = Number(this.fields.maxTokens.value);
    if (this.fields.seed.value !== "") body.seed = Number(this.fields.seed.value);
    const tools = this.fields.tools.value.trim();
    if (tools) {
      try {
        body.tools = JSON.parse(tools);
      } catch (error) {
        throw new Error(`Tools is not valid JSON: ${error.message}`);
      }
    }
    return body;
  }

  async ask() {
    const text = this.input.value.trim();
    if (!text || this.abort) return;
    this.emptyNote.remove();
    this.log.append(el("article", { class: "msg user" }, el("div", { class: "content" }, text)));
    this.messages.push({ role: "user", content: text });
    this.input.value = "";
    const answer = new AnswerView(this.picker.value, performance.now());
    this.log.append(answer.node);
    this.abort = new AbortController();
    this.send.disabled = true;
    this.cancel.hidden = false;
    try {
      const response = await postJson("/v1/chat/completions", this.request(), { signal: this.abort.signal });
      answer.servedBy(response.headers);
      for await (const data of sseData(response)) {
        answer.apply(JSON.parse(data));
        this.log.scrollTop = this.log.scrollHeight;
      }
      answer.finish();
    } catch (error) {
      answer.fail(error.name === "AbortError" ? "cancelled" : String(error));
    } finally {
      // A failed turn leaves no answer to build on: drop its question from the conversation too.
      if (answer.answered()) this.messages.push(answer.message());
      else this.messages.pop();
      this.abort = null;
      this.send.disabled = false;
      this.cancel.hidden = true;
      this.log.scrollTop = this.log.scrollHeight;
    }
  }
}

/** One assistant answer as it streams in: reasoning, content, tool calls, then usage, speed and who served it. */
class AnswerView {
  constructor(model, sentAt) {
    this.sentAt = sentAt; // performance.now() when the request left
    this.firstAt = null; // ... when the first reasoning, content or tool-call text arrived
    this.lastAt = null; // ... when the last one did
    this.renderPending = false;
    this.content = "";
    this.reasoning = "";
    this.toolCalls = []; // by index, arguments accumulated from the deltas
    this.finishReason = null;
    this.usage = null;
    this.reasoningText = el("div", { class: "reasoning-text" });
    this.reasoningBlock = el("details", { class: "reasoning", hidden: true }, el("summary", {}, "Reasoning"), this.reasoningText);
    this.contentNode = el("div", { class: "content" });
    this.toolsNode = el("div", { class: "tool-calls" });
    this.errorNode = el("div", { class: "error", hidden: true });
    this.meta = el("footer", { class: "meta" });
    this.node = el("article", { class: "msg assistant", dataset: { state: "streaming" } },
      el("header", {}, el("strong", {}, model), el("span", { class: "cursor" })),
      this.reasoningBlock, this.contentNode, this.toolsNode, this.errorNode, this.meta);
    this.header = this.node.querySelector("header");
  }

  servedBy(headers) {
    const model = headers.get("x-gpufleet-model");
    const target = headers.get("x-gpufleet-target");
    const tier = headers.get("x-gpufleet-tier");
    const parts = [model && `model ${model}`, target && target !== model && `via ${target}`, tier && `tier ${tier}`];
    this.served = parts.filter(Boolean).join(" · ");
  }

  apply(chunk) {
    if (chunk.error) {
      // The gateway ends a stream that broke after its first byte with an error event.
      this.fail(`${chunk.error.code ?? "error"}: ${chunk.error.message}`);
      return;
    }
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      const delta = choice.delta ?? {};
      // The gateway may send the same text under both names (vLLM's and the newer one): take one.
      const reasoning = delta.reasoning_content ?? delta.reasoning;
      if (reasoning || delta.content || delta.tool_calls?.length) this.tokenArrived();
      if (reasoning) {
        this.reasoning += reasoning;
        this.reasoningText.textContent = this.reasoning;
        this.reasoningBlock.hidden = false;
      }
      if (delta.content) {
        this.content += delta.content;
        this.scheduleRender();
      }
      for (const call of delta.tool_calls ?? []) this.addToolCall(call);
      if (choice.finish_reason) this.finishReason = choice.finish_reason;
    }
  }

  tokenArrived() {
    const now = performance.now();
    this.firstAt ??= now;
    this.lastAt = now;
  }

  // Markdown is rendered at most once per frame while the answer streams (a long answer re-renders whole).
  scheduleRender() {
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      this.renderContent();
    });
  }

  renderContent() {
    this.contentNode.replaceChildren(...renderMarkdown(this.content));
  }

  /** Time to first token (ms) and decode rate (completion tokens after the first / time between first and last). */
  speed() {
    if (this.firstAt === null) return {};
    const ttftMs = Math.round(this.firstAt - this.sentAt);
    const tokens = this.usage?.completion_tokens;
    const spanS = (this.lastAt - this.firstAt) / 1000;
    const perS = tokens > 1 && spanS > 0 ? (tokens - 1) / spanS : null;
    return { ttftMs, perS };
  }

  addToolCall(delta) {
    const index = delta.index ?? this.toolCalls.length;
    const call = (this.toolCalls[index] ??= { id: "", type: "function", function: { name: "", arguments: "" } });
    if (delta.id) call.id = delta.id;
    if (delta.function?.name) call.function.name += delta.function.name;
    if (delta.function?.arguments) call.function.arguments += delta.function.arguments;
    this.toolsNode.replaceChildren(...this.toolCalls.filter(Boolean).map(toolCallView));
  }

  finish() {
    this.header.querySelector(".cursor")?.remove();
    const parts = [this.served];
    if (this.finishReason) parts.push(`finish: ${this.finishReason}`);
    if (this.usage) parts.push(`${this.usage.prompt_tokens} prompt + ${this.usage.completion_tokens} completion tokens`);
    const { ttftMs, perS } = this.speed();
    const speed = [];
    if (ttftMs !== undefined) {
      this.node.dataset.ttftMs = String(ttftMs);
      speed.push(el("span", { class: "ttft", title: "time to first token, from sending to the first token's arrival here" }, `TTFT ${ttftMs} ms`));
    }
    if (perS) {
      this.node.dataset.tokensPerS = perS.toFixed(1);
      speed.push(el("span", { class: "tok-s", title: "completion tokens after the first, per second of streaming" }, `${perS.toFixed(1)} tok/s`));
    }
    const items = [...parts.filter(Boolean), ...speed];
    this.meta.replaceChildren(...items.flatMap((item, n) => (n ? [" · ", item] : [item])));
    this.renderContent();
    if (!this.content && !this.toolCalls.length) this.contentNode.replaceChildren(el("span", { class: "muted" }, "(empty answer)"));
    this.node.dataset.state = "done"; // last: a test (or a reader) waiting for it sees the finished answer
  }

  fail(text) {
    this.node.dataset.state = "error";
    this.header.querySelector(".cursor")?.remove();
    this.errorNode.textContent = text;
    this.errorNode.hidden = false;
  }

  answered() {
    return Boolean(this.content || this.toolCalls.length);
  }

  /** The answer as a message for the next turn of the conversation. */
  message() {
    const message = { role: "assistant", content: this.content };
    const calls = this.toolCalls.filter(Boolean);
    if (calls.length) message.tool_calls = calls;
    return message;
  }
}

function toolCallView(call) {
  let args = call.function.arguments;
  try {
    args = JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    // Still streaming (or not JSON): show it as it is.
  }
  return el("div", { class: "tool-call" },
    el("div", { class: "tool-name" }, "tool call ", el("code", {}, call.function.name || "…"), call.id ? el("span", { class: "muted small" }, ` ${call.id}`) : null),
    el("pre", {}, args));
}
