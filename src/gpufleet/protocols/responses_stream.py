"""Chat-completion chunks -> the OpenAI Responses event stream, each event with its `sequence_number`.

response.created, response.in_progress,
per output item: output_item.added, (reasoning_summary_part.added, reasoning_summary_text.delta*,
  reasoning_summary_text.done, reasoning_summary_part.done | content_part.added, output_text.delta*,
  output_text.done, content_part.done | function_call_arguments.delta*, function_call_arguments.done),
  output_item.done
response.completed | response.incomplete (max_output_tokens) | response.failed (the stream broke)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from gpufleet.protocols.chunk_encoder import ChunkEncoder
from gpufleet.protocols.responses_answer import (
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    response_usage,
)


class _Item:
    """The output item being streamed: its kind, id, position and the text or arguments so far."""

    def __init__(self, kind: str, output_index: int, call: dict[str, Any] | None = None) -> None:
        self.kind = kind  # "reasoning" | "message" | "function_call"
        self.id = new_id({"reasoning": "rs", "message": "msg", "function_call": "fc"}[kind])
        self.output_index = output_index
        self.text = ""
        self.call = call or {}
        # What every delta event of this item carries after its sequence_number (see ResponsesStreamEncoder._delta).
        self.delta_tail = b',"item_id":"' + self.id.encode() + b'","output_index":%d,' % output_index

    def item(self, status: str) -> dict[str, Any]:
        if self.kind == "reasoning":
            item = reasoning_item(self.text, self.id)
            return item if status == "completed" else {**item, "summary": []}
        if self.kind == "message":
            item = message_item(self.text, self.id, status)
            return item if status == "completed" else {**item, "content": []}
        function = dict(self.call.get("function") or {})
        function["arguments"] = self.text if status == "completed" else ""
        return function_call_item({**self.call, "function": function}, self.id, status)


class ResponsesStreamEncoder(ChunkEncoder):
    """Feed it chat.completion.chunk dicts (after the dialect); it returns the Responses SSE bytes for each.

    `on_complete` gets the final response object (completed or incomplete): the route stores it.
    """

    def __init__(
        self,
        request: dict[str, Any],
        model: str,
        response_id: str | None = None,
        on_complete: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.request = request
        self.model = model
        self.response_id = response_id or new_id("resp")
        self.created_at = int(time.time())
        self.on_complete = on_complete
        self._sequence = 0
        self._item: _Item | None = None
        self._output: list[dict[str, Any]] = []
        self._calls: dict[int, _Item] = {}

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        return self._event_json(name, orjson.dumps(data))

    def _event_json(self, name: str, data: bytes) -> bytes:
        """The event `name` for `data`, a JSON object already encoded: `type` and `sequence_number` go first."""
        head = name.encode()
        sequence = self._sequence
        self._sequence += 1
        return (
            b"event: " + head + b'\ndata: {"type":"' + head + b'","sequence_number":%d,' % sequence + data[1:] + b"\n\n"
        )

    def _delta(self, name: bytes, item: _Item, fields: bytes, delta: str, tail: bytes = b"") -> bytes:
        """A delta event built from bytes (one orjson.dumps of the delta string): the stream's hot path."""
        sequence = self._sequence
        self._sequence += 1
        return (
            b"event: "
            + name
            + b'\ndata: {"type":"'
            + name
            + b'","sequence_number":%d' % sequence
            + item.delta_tail
            + fields
            + b'"delta":'
            + orjson.dumps(delta)
            + tail
            + b"}\n\n"
        )

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        usage = response_usage(self._usage) if status != "in_progress" else None
        return response_object(
            self.request,
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            output=list(self._output),
            usage=usage,
            error=error,
        )

    def _start(self, out: list[bytes]) -> None:
        data = orjson.dumps({"response": self._response("in_progress")})  # the same object twice: encoded once
        out.append(self._event_json("response.created", data))
        out.append(self._event_json("response.in_progress", data))

    def _open(self, kind: str, out: list[bytes], call: dict[str, Any] | None = None) -> _Item:
        self._close(out)
        item = self._item = _Item(kind, len(self._output), call)
        out.append(
            self._event(
                "response.output_item.added", {"output_index": item.output_index, "item": item.item("in_progress")}
            )
        )
        where = {"item_id": item.id, "output_index": item.output_index}
        if kind == "reasoning":
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    {**where, "summary_index": 0, "part": {"type": "summary_text", "text": ""}},
                )
            )
        elif kind == "message":
            out.append(
                self._event(
                    "response.content_part.added",
                    {**where, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}},
                )
            )
        return item

    def _close(self, out: list[bytes]) -> None:
        item = self._item
        if item is None:
            return
        self._item = None
        where = {"item_id": item.id, "output_index": item.output_index}
        if item.kind == "reasoning":
            out.append(
                self._event("response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": item.text})
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    {**where, "summary_index": 0, "part": {"type": "summary_text", "text": item.text}},
                )
            )
        elif item.kind == "message":
            out.append(
                self._event(
                    "response.output_text.done", {**where, "content_index": 0, "text": item.text, "logprobs": []}
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    {
                        **where,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": item.text, "annotations": []},
                    },
                )
            )
        else:
            out.append(self._event("response.function_call_arguments.done", {**where, "arguments": item.text}))
        done = item.item("completed")
        self._output.append(done)
        out.append(self._event("response.output_item.done", {"output_index": item.output_index, "item": done}))

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self._item if self._item is not None and self._item.kind == "reasoning" else None
        item = item or self._open("reasoning", out)
        item.text += text
        out.append(self._delta(b"response.reasoning_summary_text.delta", item, b'"summary_index":0,', text))

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self._item if self._item is not None and self._item.kind == "message" else None
        item = item or self._open("message", out)
        item.text += text
        out.append(self._delta(b"response.output_text.delta", item, b'"content_index":0,', text, b',"logprobs":[]'))

    def _text_open(self) -> bool:
        return self._item is not None and self._item.kind == "message"

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = int(call.get("index") or 0)
        item = self._calls.get(position)
        if item is None:
            function = call.get("function") or {}
            call_id = call.get("id") or new_id("call")
            item = self._open("function_call", out, {"id": call_id, "function": {"name": function.get("name") or ""}})
            self._calls[position] = item
        elif item is not self._item:
            return  # a fragment for a call already closed: engines interleave only by mistake
        arguments = (call.get("function") or {}).get("arguments")
        if isinstance(arguments, str) and arguments:
            item.text += arguments
            out.append(self._delta(b"response.function_call_arguments.delta", item, b"", arguments))

    def _end(self, out: list[bytes]) -> None:
        """response.completed (or .incomplete, when the answer hit max_output_tokens)."""
        status = "incomplete" if self._finish == "length" else "completed"
        final = self._response(status)
        if self.on_complete is not None:
            self.on_complete(final)
        out.append(self._event(f"response.{status}", {"response": final}))

    def error(self, body: dict[str, Any]) -> bytes:
        """The stream broke after bytes reached the client: response.failed ends it."""
        if self._finished:
            return b""
        out: list[bytes] = []
        self._begin(out)
        self._finished = True
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        error = {"code": str(err.get("code") or "server_error"), "message": str(err.get("message") or body)}
        out.append(self._event("response.failed", {"response": self._response("failed", error)}))
        return b"".join(out)

    @property
    def output(self) -> list[dict[str, Any]]:
        return self._output
