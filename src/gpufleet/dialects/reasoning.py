"""Reasoning parsers: split `<think>…</think>` out of the text an engine returned as content.

Rules (the same for the whole-text and the streaming method, so a stream reassembles to the whole):
- output that starts with `<think>` (after whitespace) is reasoning up to `</think>`;
- output of a request with thinking on whose template already opened the block (Thinking-2507,
  DeepSeek-R1) is reasoning from its first character up to `</think>`;
- no `</think>` at all (truncated output) means everything after the opening is reasoning;
- otherwise the text is plain content: with thinking off, Qwen's answer is never moved into
  reasoning (vLLM #17349), and the empty `<think>\\n\\n</think>` block is dropped.
Whitespace around the reasoning and at the start of the answer is trimmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from gpufleet.dialects.textstream import releasable_len

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


class Segment(NamedTuple):
    """A piece of model output classified as reasoning or answer content."""

    kind: Literal["reasoning", "content"]
    text: str


class ReasoningSplit(NamedTuple):
    """The result of splitting a whole output: reasoning (None when there was none) and content."""

    reasoning: str | None
    content: str


@dataclass(frozen=True)
class ThinkTagReasoningParser:
    """`<think>…</think>` parser; `assume_open` says the template opens the block when thinking is on."""

    name: str
    assume_open: bool = False

    def extract(self, text: str, *, starts_in_reasoning: bool = False) -> ReasoningSplit:
        """Split a whole output into reasoning and content."""
        stripped = text.lstrip()
        if stripped.startswith(OPEN_TAG):
            rest = stripped[len(OPEN_TAG) :]
        elif starts_in_reasoning:
            rest = text
        else:
            return ReasoningSplit(None, text)
        end = rest.find(CLOSE_TAG)
        if end < 0:
            reasoning, content = rest, ""
        else:
            reasoning, content = rest[:end], rest[end + len(CLOSE_TAG) :].lstrip()
        return ReasoningSplit(reasoning.strip() or None, content)

    def stream(self, *, starts_in_reasoning: bool = False) -> ReasoningStream:
        """A fresh streaming parser for one response."""
        return ReasoningStream(starts_in_reasoning=starts_in_reasoning)


class ReasoningStream:
    """Incremental `<think>` splitter: feed content pieces, get reasoning/content segments back."""

    def __init__(self, *, starts_in_reasoning: bool = False) -> None:
        self._starts_in_reasoning = starts_in_reasoning
        self._state: Literal["start", "reasoning", "content"] = "start"
        self._buf = ""
        self._reasoning_started = False  # leading whitespace of reasoning is dropped
        self._after_close = False  # leading whitespace of the answer is dropped

    @property
    def in_reasoning(self) -> bool:
        """True while the output is (or may still be) inside the thinking block."""
        return self._state == "reasoning" or (self._state == "start" and self._starts_in_reasoning)

    def feed(self, text: str) -> list[Segment]:
        """Take the next piece of content; return what can be released now."""
        self._buf += text
        return self._drain(final=False)

    def finish(self) -> list[Segment]:
        """Release everything held back at the end of the output."""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[Segment]:
        out: list[Segment] = []
        if self._state == "start" and not self._decide_start(final):
            return out
        if self._state == "reasoning":
            self._drain_reasoning(out, final)
        if self._state == "content":
            if self._after_close:
                self._buf = self._buf.lstrip()
                self._after_close = not self._buf
            if self._buf:
                out.append(Segment("content", self._buf))
                self._buf = ""
        return out

    def _decide_start(self, final: bool) -> bool:
        """Decide from the first non-blank characters whether output opens with `<think>`."""
        stripped = self._buf.lstrip()
        if stripped.startswith(OPEN_TAG):
            self._buf = stripped[len(OPEN_TAG) :]
            self._state = "reasoning"
        elif not final and OPEN_TAG.startswith(stripped):
            return False  # blank so far, or a cut `<thi`: wait for more
        else:
            self._state = "reasoning" if self._starts_in_reasoning else "content"
        return True

    def _drain_reasoning(self, out: list[Segment], final: bool) -> None:
        end = self._buf.find(CLOSE_TAG)
        if end >= 0:
            piece = self._buf[:end].rstrip()
            self._buf = self._buf[end + len(CLOSE_TAG) :]
            self._state = "content"
            self._after_close = True
        elif final:
            piece, self._buf = self._buf.rstrip(), ""
        else:
            cut = releasable_len(self._buf, CLOSE_TAG, hold_whitespace=True)
            piece, self._buf = self._buf[:cut], self._buf[cut:]
        if not self._reasoning_started:
            piece = piece.lstrip()
        if piece:
            self._reasoning_started = True
            out.append(Segment("reasoning", piece))
