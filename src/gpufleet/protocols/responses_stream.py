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
    echoed_fields,
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    response_object,
    response_usage,
)

_ID_PREFIX = {"reasoning": "rs", "message": "msg", "function_call": "fc"}
# Per item kind: its delta event's name, the fields after output_index, and what follows the delta string.
_DELTA = {
    "reasoning": (b"response.reasoning_summary_text.delta", b'"summary_index":0,', b"}\n\n"),
    "message": (b"response.output_text.delta", b'"content_index":0,', b',"logprobs":[]}\n\n'),
    "function_call": (b"response.function_call_arguments.delta", b"", b"}\n\n"),
}


def _event_head(name: bytes) -> bytes:
    """What an event's bytes start with, up to its sequence_number's value."""
    return b"event: " + name + b'\ndata: {"type":"' + name + b'","sequence_number":'


class _Item:
    """The output item being streamed: its kind, id, position and the text or arguments so far.

    Its delta events are built from bytes made once here: `delta_head`, the sequence number, `delta_mid`,
    one orjson.dumps of the delta string, `delta_end` (the stream's hot path, issue 23)."""

    __slots__ = ("call", "delta_end", "delta_head", "delta_mid", "id", "kind", "output_index", "parts", "where")

    def __init__(self, kind: str, output_index: int, call: dict[str, Any] | None = None) -> None:
        self.kind = kind  # "reasoning" | "message" | "function_call"
        self.id = new_id(_ID_PREFIX[kind])
        self.output_index = output_index
        self.parts: list[str] = []  # joined when the item closes (`+=` on an attribute copies the text each time)
        self.call = call or {}
        name, fields, end = _DELTA[kind]
        # The fields its events start with (after type and sequence_number); the id is letters and digits only.
        self.where = b'"item_id":"%b","output_index":%d' % (self.id.encode(), output_index)
        self.delta_head = _event_head(name)
        self.delta_mid = b"," + self.where + b"," + fields + b'"delta":'
        self.delta_end = end

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def item(self, status: str, text: str = "") -> dict[str, Any]:
        """The item as output_item.added (in_progress: empty) or .done (completed: with `text`) carry it."""
        if self.kind == "reasoning":
            item = reasoning_item(text, self.id)
            return item if status == "completed" else {**item, "summary": []}
        if self.kind == "message":
            item = message_item(text, self.id, status)
            return item if status == "completed" else {**item, "content": []}
        function = dict(self.call.get("function") or {})
        function["arguments"] = text if status == "completed" else ""
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
        self._output_json: list[bytes] = []  # each of `_output` encoded (as output_item.done sent it)
        self._calls: dict[int, _Item] = {}
        self._echoed_json = b""  # echoed_fields(request) encoded, without its braces: once per stream

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        return self._event_json(name, orjson.dumps(data))

    def _event_json(self, name: str, data: bytes) -> bytes:
        """The event `name` for `data`, a JSON object already encoded: `type` and `sequence_number` go first."""
        return self._event_fields(name, data[1:-1])

    def _event_fields(self, name: str, fields: bytes) -> bytes:
        """The event `name` whose data is `type`, `sequence_number` and then `fields` (JSON members, encoded)."""
        sequence = self._sequence
        self._sequence = sequence + 1
        return _event_head(name.encode()) + b"%d,%b}\n\n" % (sequence, fields)

    def _delta(self, item: _Item, delta: str) -> bytes:
        """One delta event of `item`: its bytes made once, the sequence number and one orjson.dumps."""
        item.parts.append(delta)
        sequence = self._sequence
        self._sequence = sequence + 1
        return item.delta_head + b"%d" % sequence + item.delta_mid + orjson.dumps(delta) + item.delta_end

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            self.request,
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            output=list(self._output),
            usage=response_usage(self._usage),
            error=error,
        )

    def _response_json(self, status: str, error: dict[str, Any] | None = None) -> bytes:
        """orjson.dumps(self._response(status, error)) without building it again: the request's echoed fields
        (Codex's whole tool list, say) are encoded once per stream and the output items as they closed."""
        if not self._echoed_json:
            self._echoed_json = orjson.dumps(echoed_fields(self.request))[1:-1]
        usage = orjson.dumps(response_usage(self._usage)) if status != "in_progress" else b"null"
        return b'{"id":%b,"object":"response","created_at":%d,"status":"%b","model":%b,"output":[%b],"error":%b,' % (
            orjson.dumps(self.response_id),
            self.created_at,
            status.encode(),
            orjson.dumps(self.model),
            b",".join(self._output_json),
            orjson.dumps(error),
        ) + b'"incomplete_details":%b,"usage":%b,%b}' % (
            b'{"reason":"max_output_tokens"}' if status == "incomplete" else b"null",
            usage,
            self._echoed_json,
        )

    def _start(self, out: list[bytes]) -> None:
        data = b'"response":' + self._response_json("in_progress")  # the same object twice: encoded once
        out.append(self._event_fields("response.created", data))
        out.append(self._event_fields("response.in_progress", data))

    def _open(self, kind: str, out: list[bytes], call: dict[str, Any] | None = None) -> _Item:
        self._close(out)
        item = self._item = _Item(kind, len(self._output), call)
        out.append(
            self._event(
                "response.output_item.added", {"output_index": item.output_index, "item": item.item("in_progress")}
            )
        )
        if kind == "reasoning":
            part = b',"summary_index":0,"part":{"type":"summary_text","text":""}'
            out.append(self._event_fields("response.reasoning_summary_part.added", item.where + part))
        elif kind == "message":
            part = b',"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}'
            out.append(self._event_fields("response.content_part.added", item.where + part))
        return item

    def _close(self, out: list[bytes]) -> None:
        item = self._item
        if item is None:
            return
        self._item = None
        text = item.text
        encoded = orjson.dumps(text)  # once, for the two or three events that repeat it
        where = item.where
        if item.kind == "reasoning":
            out.append(
                self._event_fields(
                    "response.reasoning_summary_text.done", where + b',"summary_index":0,"text":' + encoded
                )
            )
            part = b',"summary_index":0,"part":{"type":"summary_text","text":%b}' % encoded
            out.append(self._event_fields("response.reasoning_summary_part.done", where + part))
        elif item.kind == "message":
            fields = b',"content_index":0,"text":%b,"logprobs":[]' % encoded
            out.append(self._event_fields("response.output_text.done", where + fields))
            part = b',"content_index":0,"part":{"type":"output_text","text":%b,"annotations":[]}' % encoded
            out.append(self._event_fields("response.content_part.done", where + part))
        else:
            out.append(self._event_fields("response.function_call_arguments.done", where + b',"arguments":' + encoded))
        done = item.item("completed", text)
        done_json = orjson.dumps(done)
        self._output.append(done)
        self._output_json.append(done_json)
        fields = b'"output_index":%d,"item":%b' % (item.output_index, done_json)
        out.append(self._event_fields("response.output_item.done", fields))

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self._item
        if item is None or item.kind != "reasoning":
            item = self._open("reasoning", out)
        out.append(self._delta(item, text))

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self._item
        if item is None or item.kind != "message":
            item = self._open("message", out)
        out.append(self._delta(item, text))

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
            out.append(self._delta(item, arguments))

    def _end(self, out: list[bytes]) -> None:
        """response.completed (or .incomplete, when the answer hit max_output_tokens)."""
        status = "incomplete" if self._finish == "length" else "completed"
        if self.on_complete is not None:
            self.on_complete(self._response(status))  # (the route stores it: store true)
        out.append(self._event_fields(f"response.{status}", b'"response":' + self._response_json(status)))

    def error(self, body: dict[str, Any]) -> bytes:
        """The stream broke after bytes reached the client: response.failed ends it."""
        if self._finished:
            return b""
        out: list[bytes] = []
        self._begin(out)
        self._finished = True
        err: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        error = {"code": str(err.get("code") or "server_error"), "message": str(err.get("message") or body)}
        out.append(self._event_fields("response.failed", b'"response":' + self._response_json("failed", error)))
        return b"".join(out)

    @property
    def output(self) -> list[dict[str, Any]]:
        return self._output
