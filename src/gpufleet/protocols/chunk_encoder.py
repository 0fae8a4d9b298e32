"""What the Messages and Responses stream encoders share: chat chunks in, the client protocol's SSE bytes out.

The base walks each chunk (choice 0's reasoning, text and tool-call fragments, its finish_reason, the usage)
and keeps the stream's state (started, finished); a subclass writes its protocol's events in the hooks:

    _start(out)              the opening events, before the first delta (or the end of an empty stream)
    _reasoning / _text       a piece of choice 0's reasoning / answer text
    _tool_call(call, out)    a chat tool-call fragment
    _finish_seen(choice, chunk), _chunk_seen(chunk)   what else a chunk says (e.g. the stop string matched)
    _close(out)              close the open block or item
    _end(out)                the closing events after the last block

and, while a text (reasoning) block or item is open, sets `_text_write` (`_reasoning_write`) to a function
that returns one delta event of it: a chunk that only continues the open block goes straight there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Write = Callable[[str], bytes]  # a piece of text -> the open block's delta event


class ChunkEncoder:
    """Feed it chat.completion.chunk dicts (after the dialect); it returns the client protocol's SSE bytes."""

    def __init__(self) -> None:
        self._started = False
        self._finished = False
        self._finish: Any = None  # choice 0's finish_reason, once it came
        self._usage: dict[str, Any] | None = None
        self._text_write: Write | None = None  # set while a text block (item) is open
        self._reasoning_write: Write | None = None  # set while a reasoning block (item) is open

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        # The stream's hot path (issue 23): most chunks carry one choice whose delta continues the open text or
        # reasoning block. Such a chunk is one delta event, written without the walk; `_walk` gives the same
        # bytes for it (it would call `_text` / `_reasoning` with the block open, and nothing else). Each test
        # here costs about as much as the event's encoding, so there are few: a chunk of another shape raises
        # or fails one of them and takes the walk.
        if chunk.get("usage") is None and "__verbose" not in chunk:  # (`_chunk_seen` may read llama.cpp's)
            try:
                (choice,) = chunk["choices"]
                delta = choice["delta"]
                size = len(delta)
                plain = choice["finish_reason"] is None and choice.get("index", 0) == 0
            except (KeyError, TypeError, ValueError):
                plain = False
            if plain and type(delta) is dict:
                text = delta.get("content")
                if text is not None:
                    write = self._text_write if size == 1 else None
                elif size == 1 or (size == 2 and "reasoning" in delta and "reasoning_content" in delta):
                    # (the dialect names reasoning twice; `_walk` then writes the first name's text)
                    text = delta.get("reasoning_content") or delta.get("reasoning")
                    write = self._reasoning_write
                else:
                    write = None
                if write is not None and type(text) is str and text:
                    return write(text)
        return self._walk(chunk)

    def _walk(self, chunk: dict[str, Any]) -> bytes:
        """Every chunk the hot path does not take: the reads are inlined, and only the hooks that write an event
        are called."""
        out: list[bytes] = []
        if not self._started:
            self._begin(out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices")
        if choices:
            for choice in choices:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta")
                if delta:
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")  # as reasoning_text
                    if reasoning and isinstance(reasoning, str):
                        self._reasoning(reasoning, out)
                    text = delta.get("content")
                    if text and isinstance(text, str):
                        self._text(text, out)
                    calls = delta.get("tool_calls")
                    if calls:
                        for call in calls:
                            self._tool_call(call, out)
                finish = choice.get("finish_reason")
                if finish is not None:
                    self._finish = finish
                    self._finish_seen(choice, chunk)
        self._chunk_seen(chunk)
        return b"".join(out)

    def text_piece(self, text: str) -> bytes | None:
        """The bytes `chunk` gives for a chunk carrying only `text` as choice 0's content, when the text block or
        item is open already; None otherwise. The relay's fast path feeds it a plain content chunk's text without
        parsing the chunk (issue 23: a translated stream's per-chunk cost)."""
        write = self._text_write
        if not text or write is None or self._finished:
            return None
        return write(text)

    def done(self) -> bytes:
        """The upstream finished: close the open block or item, then the protocol's closing events."""
        if self._finished:
            return b""
        out: list[bytes] = []
        self._begin(out)
        self._close(out)
        self._finished = True
        self._end(out)
        return b"".join(out)

    def _begin(self, out: list[bytes]) -> None:
        """The opening events, once."""
        if not self._started:
            self._started = True
            self._start(out)

    def _start(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        raise NotImplementedError

    def _text(self, text: str, out: list[bytes]) -> None:
        raise NotImplementedError

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def _finish_seen(self, choice: dict[str, Any], chunk: dict[str, Any]) -> None:
        """Choice 0 finished in `chunk` (its finish_reason is already kept)."""

    def _chunk_seen(self, chunk: dict[str, Any]) -> None:
        """Every chunk the walk sees, after its choices: those with a `__verbose` field among them."""

    def _close(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def _end(self, out: list[bytes]) -> None:
        raise NotImplementedError
