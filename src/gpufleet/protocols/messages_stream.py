"""Chat-completion chunks -> the Anthropic Messages event stream.

    message_start, ping, (content_block_start, content_block_delta*, content_block_stop)*,
    message_delta (stop_reason, usage), message_stop         -- or, once broken, an `error` event

One block is open at a time: thinking (thinking_delta, then a signature_delta before it stops), text
(text_delta) or tool_use (input_json_delta with the argument fragments as they come).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from gpufleet.protocols.chunk_encoder import ChunkEncoder
from gpufleet.protocols.messages_answer import (
    THINKING_SIGNATURE,
    matched_stop,
    message_id,
    messages_error_body,
    stop_reason,
    usage_of,
)


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesStreamEncoder(ChunkEncoder):
    """Feed it chat.completion.chunk dicts (after the dialect); it returns the Anthropic SSE bytes for each."""

    def __init__(self, model: str, stops: list[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.stops = stops
        self._block: str | None = None  # "thinking" | "text" | "tool_use"
        self._index = -1
        # The bytes every content_block_delta of the open block starts with, and the open text or thinking block's
        # delta event with a `%b` for its JSON string: a delta then costs one orjson.dumps and one format (the
        # stream's hot path: issue 23's 0.3 ms budget for the translation).
        self._delta_head = b""
        self._piece_format = b""
        self._tool_blocks: dict[int, int] = {}  # chat tool-call index -> content block index
        self._matched: str | None = None  # the stop string the engine named (see matched_stop)
        self._saw_tool_call = False

    def _start(self, out: list[bytes]) -> None:
        message: dict[str, Any] = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_of(None),
        }
        out.append(event("message_start", {"type": "message_start", "message": message}))
        out.append(event("ping", {"type": "ping"}))

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._index += 1
        self._block = kind
        self._delta_head = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":' % self._index
        )
        if kind == "text":
            self._piece_format = self._delta_head + b'{"type":"text_delta","text":%b}}\n\n'
            self._text_write = self._piece
        elif kind == "thinking":
            self._piece_format = self._delta_head + b'{"type":"thinking_delta","thinking":%b}}\n\n'
            self._reasoning_write = self._piece
        out.append(
            event("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block})
        )

    def _close(self, out: list[bytes]) -> None:
        if self._block is None:
            return
        if self._block == "thinking":
            out.append(self._delta({"type": "signature_delta", "signature": THINKING_SIGNATURE}))
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._block = None
        self._text_write = self._reasoning_write = None

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._delta_head + orjson.dumps(delta) + b"}\n\n"

    def _finish_seen(self, choice: dict[str, Any], chunk: dict[str, Any]) -> None:
        self._matched = matched_stop(choice, chunk) or self._matched

    def _chunk_seen(self, chunk: dict[str, Any]) -> None:
        if "__verbose" in chunk and self._matched is None:  # llama.cpp may name it on a chunk of its own
            self._matched = matched_stop({}, chunk)

    def _piece(self, text: str) -> bytes:
        """A text_delta (thinking_delta) of the open text (thinking) block."""
        return self._piece_format % orjson.dumps(text)

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        if self._block != "thinking":
            self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        out.append(self._piece(text))

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._block != "text":
            self._open("text", {"type": "text", "text": ""}, out)
        out.append(self._piece(text))

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = int(call.get("index") or 0)
        function = call.get("function") or {}
        if position not in self._tool_blocks:
            self._saw_tool_call = True
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                "name": function.get("name") or "",
                "input": {},
            }
            self._open("tool_use", block, out)
            self._tool_blocks[position] = self._index
        elif self._tool_blocks[position] != self._index:
            return  # a fragment for a call already closed: engines interleave only by mistake; Anthropic cannot
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))

    def _end(self, out: list[bytes]) -> None:
        """message_delta (stop_reason, usage) and message_stop."""
        finish = self._finish or "stop"
        if self._saw_tool_call and finish == "stop":
            finish = "tool_calls"
        reason, sequence = stop_reason(finish, self._matched, self.stops)
        usage = usage_of(self._usage)
        out.append(
            event(
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage},
            )
        )
        out.append(event("message_stop", {"type": "message_stop"}))

    def error(self, body: dict[str, Any]) -> bytes:
        """The stream broke after bytes reached the client: an Anthropic `error` event ends it."""
        if self._finished:
            return b""
        self._finished = True
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        message = str(err.get("message") or body)
        return event("error", messages_error_body(500, message))
