"""Continuing a broken stream on another replica: what was relayed so far, and the request that continues it.

When a stream breaks after bytes reached the client, the same model on another target can pick up where it left
off: the text relayed so far goes back as the assistant's unfinished message (chat) or after the prompt
(completions), and the new upstream generates only the rest. Measured on the pinned llama.cpp with SmolLM2 at
temperature 0: cut after 3, 20, 60, 100, 150 or 190 streamed chunks of a 200-token answer, the continued stream's
text appended to what was relayed equals the uninterrupted answer exactly (docs/router.md, "Resuming a stream").

    trail = ResumeTrail()
    for chunk in upstream_chunks: trail.feed(chunk)          # the upstream's chunks, before any dialect transform
    body = resume_body(original_body, "chat", trail)          # None: this stream cannot be resumed
    ... for chunk in new_upstream_chunks: send(trail.splice(chunk))

The trail keeps the upstream's own text, not what the client was shown: a dialect that holds back a partial
`<tool_call>` tag or turns `<think>` into `reasoning_content` keeps its state across the switch, so the new
upstream's raw continuation finishes exactly what the first one started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["chat", "completion"]

# Token-count fields a client may use; the continuation asks for what is left of whichever it set.
_TOKEN_LIMITS = ("max_tokens", "max_completion_tokens", "n_predict")


@dataclass
class ResumeTrail:
    """What one stream's upstream sent so far (choice 0): its text, its id, and how many pieces it generated."""

    content: str = ""
    reasoning: str = ""
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)  # by index: name, arguments so far
    generated: int = 0  # content-bearing chunks (one token each on llama.cpp and vLLM at the default interval)
    envelope: dict[str, Any] = field(default_factory=dict)  # id, created, system_fingerprint of the first part
    finished: bool = False  # a finish_reason was seen: nothing to continue
    resumable: bool = True  # False once something arrived that a continuation cannot reproduce (n > 1, logprobs)
    resumes: int = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        """Record one upstream chunk (complete events only: a half event is lost with the broken connection)."""
        if not self.envelope:
            self.envelope = {k: chunk[k] for k in ("id", "created", "system_fingerprint") if k in chunk}
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("index", 0) != 0 or choice.get("logprobs"):
                self.resumable = False
                continue
            if choice.get("finish_reason"):
                self.finished = True
            text = choice.get("text")  # completions
            delta = choice.get("delta") or {}
            pieces = [text, delta.get("content"), delta.get("reasoning_content") or delta.get("reasoning")]
            if isinstance(text, str):
                self.content += text
            if isinstance(delta.get("content"), str):
                self.content += delta["content"]
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str):
                self.reasoning += reasoning
            for call in delta.get("tool_calls") or ():
                self._tool_call_delta(call)
                pieces.append(call)
            if any(pieces):
                self.generated += 1

    def _tool_call_delta(self, call: Any) -> None:
        if not isinstance(call, dict):
            self.resumable = False
            return
        entry = self.tool_calls.setdefault(int(call.get("index") or 0), {"name": "", "arguments": ""})
        function = call.get("function") or {}
        entry["name"] += function.get("name") or ""
        entry["arguments"] += function.get("arguments") or ""

    def splice(self, chunk: dict[str, Any], *, prefill_tokens: int = 0) -> dict[str, Any]:
        """A chunk of the continuing upstream as part of the first stream: its id and creation time, usage summed.

        `prefill_tokens` is how many prompt tokens the continuation's prompt has beyond the original one.
        """
        chunk.update(self.envelope)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            completion = int(usage.get("completion_tokens") or 0) + self.generated
            prompt = max(0, int(usage.get("prompt_tokens") or 0) - (prefill_tokens or self.generated))
            chunk["usage"] = {**usage, "prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}
        return chunk

    def assistant_text(self) -> str:
        """The assistant's unfinished message as the model wrote it: `<think>` block, text, partial tool call."""
        text = ""
        if self.reasoning:
            text += f"<think>\n{self.reasoning}" + ("\n</think>\n\n" if self.content or self.tool_calls else "")
        return text + self.content


def resume_body(body: dict[str, Any], kind: Kind, trail: ResumeTrail) -> dict[str, Any] | None:
    """The request that makes another replica of the same model continue `trail`; None when it cannot.

    Chat: the relayed text becomes a final assistant message that the engine continues (vLLM needs
    `continue_final_message` and no generation prompt; llama.cpp continues a final assistant message by itself and
    ignores the two fields). Completions: the relayed text is appended to the prompt. The token limit shrinks by
    what was generated.
    """
    if not trail.resumable or trail.finished or trail.tool_calls or int(body.get("n") or 1) != 1:
        # Tool calls the upstream had already parsed into deltas cannot be replayed as the raw text it generated.
        return None
    resumed = dict(body)
    for name in _TOKEN_LIMITS:
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            left = limit - trail.generated
            if left < 1:
                return None
            resumed[name] = left
    if kind == "completion":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return None  # token-id prompts and batches: the text cannot be appended
        resumed["prompt"] = prompt + trail.content
        return resumed
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    resumed["messages"] = [*messages, {"role": "assistant", "content": trail.assistant_text()}]
    resumed["continue_final_message"] = True
    resumed["add_generation_prompt"] = False
    return resumed
