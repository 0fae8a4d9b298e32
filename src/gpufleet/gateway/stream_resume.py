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
    generated_before: int = 0  # `generated` when the current continuation began (its usage adds to it)
    replay: str = ""  # text the continuation regenerates that the client already has (dropped from its deltas)
    content_pieces: list[int] = field(default_factory=list)  # length of each content piece, to count the replay

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
            for piece in (text, delta.get("content")):
                if isinstance(piece, str) and piece:
                    self.content += piece
                    self.content_pieces.append(len(piece))
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

    def begin_resume(self) -> None:
        """Mark the switch to the next upstream: what it sends from now on continues this stream."""
        self.resumes += 1
        # The pieces of the replayed word are generated again by the continuation: its usage counts them.
        self.generated_before = self.generated - self.replayed_pieces()

    def replayed_pieces(self) -> int:
        """How many of the last streamed pieces (a token each) hold the text the continuation writes again."""
        replayed, length = 0, 0
        for size in reversed(self.content_pieces):
            if length >= len(self.replay):
                break
            length += size
            replayed += 1
        return replayed

    def splice(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """A chunk of the continuing upstream as part of the first stream (its id and creation time, the usage of
        both parts added up); None for the continuation's opening role-only chunk, which the client already had."""
        chunk.update(self.envelope)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            # The continuation's prompt holds the text generated so far: those tokens were the first part's output.
            completion = int(usage.get("completion_tokens") or 0) + self.generated_before
            prompt = max(0, int(usage.get("prompt_tokens") or 0) - self.generated_before)
            chunk["usage"] = {
                **usage,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        choices = chunk.get("choices")
        if isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0], dict):
            if choices[0].get("finish_reason") is not None:
                chunk["gpufleet"] = {"resumed": self.resumes}  # the final chunk says the answer was continued
            if self.replay:
                self._drop_replayed(choices[0])
            delta = choices[0].get("delta")
            if (
                isinstance(delta, dict)
                and set(delta) <= {"role", "content"}
                and not delta.get("content")
                and choices[0].get("finish_reason") is None
            ):
                return None
            if "text" in choices[0] and not choices[0]["text"] and choices[0].get("finish_reason") is None:
                return None
        return chunk

    def _drop_replayed(self, choice: dict[str, Any]) -> None:
        """Cut what the client already has from the continuation's first text (see `resume_body`)."""
        delta = choice.get("delta")
        holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
        text = holder.get(key)
        if not isinstance(text, str) or not text:
            return
        if text.startswith(self.replay):
            holder[key], self.replay = text[len(self.replay) :], ""
        elif self.replay.startswith(text):
            holder[key], self.replay = "", self.replay[len(text) :]
        else:  # the continuation took another path at once: relay it as it is (no text is hidden)
            self.replay = ""

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
    # Re-tokenizing the text relayed so far can split its last word differently than the model generated it (the
    # continuation then drifts: measured on llama.cpp at some cuts). Most tokens start at a space, so the prefill
    # ends before the last word and the continuation writes that word again; the client does not see it twice.
    text = trail.content
    cut = _word_boundary(text) if text and (kind == "completion" or not trail.reasoning) else len(text)
    trail.replay = text[cut:]
    resumed = dict(body)
    for name in _TOKEN_LIMITS:
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            left = limit - trail.generated + trail.replayed_pieces()  # the replayed word is generated again
            if left < 1:
                return None
            resumed[name] = left
    if kind == "completion":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return None  # token-id prompts and batches: the text cannot be appended
        resumed["prompt"] = prompt + text[:cut]
        return resumed
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    prefill = trail.assistant_text()
    resumed["messages"] = [*messages, {"role": "assistant", "content": prefill[: len(prefill) - len(trail.replay)]}]
    resumed["continue_final_message"] = True
    resumed["add_generation_prompt"] = False
    return resumed


def _word_boundary(text: str) -> int:
    """Where the prefill ends: before the whitespace that starts the last word (the whole text when it has none,
    or when the last word would take more than a few pieces back)."""
    cut = max(text.rfind(" "), text.rfind("\n"))
    return cut if cut > 0 and len(text) - cut <= 40 else len(text)
