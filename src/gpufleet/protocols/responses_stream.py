"""Chat-completion chunks -> the OpenAI Responses event stream, each event with its `sequence_number`.

response.created, response.in_progress,
per output item: output_item.added, (reasoning_summary_part.added, reasoning_summary_text.delta*,
  reasoning_summary_text.done, reasoning_summary_part.done | content_part.added, output_text.delta*,
  output_text.done, content_part.done | function_call_arguments.delta*, function_call_arguments.done),
  output_item.done
response.completed | response.incomplete (max_output_tokens) | response.failed (the stream broke)

Every event is orjson's compact JSON of its fields, `type` and `sequence_number` first. The stream's cost is
the translation's (issue 23: at most 0.3 ms over the chat path), so the events are written from bytes made
once: per event name its head, per item kind its items' encodings with the id (and text) left as `%b`, per
item its delta event, per stream the response object's fixed parts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
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


def _event_head(name: str) -> bytes:
    """What an event's bytes start with, up to its sequence_number's value."""
    return b'event: %b\ndata: {"type":"%b","sequence_number":' % (name.encode(), name.encode())


_HEADS = {
    name: _event_head(name)
    for name in (
        "response.created",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
        "response.output_item.added",
        "response.output_item.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.done",
        "response.function_call_arguments.done",
    )
}
# Per item kind, its delta event around the item's `where` fields: (up to them, with a %d for the sequence
# number; after them, with a %b for the delta's JSON string).
_DELTA_FORMAT = {
    kind: (_event_head(name).replace(b"%", b"%%") + b"%d,", b"," + fields + b'"delta":%b' + end)
    for kind, name, fields, end in (
        ("reasoning", "response.reasoning_summary_text.delta", b'"summary_index":0,', b"}\n\n"),
        ("message", "response.output_text.delta", b'"content_index":0,', b',"logprobs":[]}\n\n'),
        ("function_call", "response.function_call_arguments.delta", b"", b"}\n\n"),
    )
}
_ID = "gpufleet-stream-item-id"  # stand-ins for an item's id and text while its encoding is made
_TEXT = "gpufleet-stream-item-text"


def _item_format(item: dict[str, Any]) -> bytes:
    """`item` as orjson encodes it, with `%b` for its id (`_ID`) and then its text (`_TEXT`, quotes and all)."""
    encoded = orjson.dumps(item).replace(b"%", b"%%").replace(_ID.encode(), b"%b")
    return encoded.replace(orjson.dumps(_TEXT), b"%b")


# Message and reasoning items as output_item.added (in progress, empty) and .done (completed) carry them: made
# by the functions that make them for non-stream answers, so the two cannot drift apart. The id comes first.
_ADDED = {
    "message": _item_format({**message_item("", _ID, "in_progress"), "content": []}),
    "reasoning": _item_format({**reasoning_item("", _ID), "summary": []}),
}
_DONE = {"message": _item_format(message_item(_TEXT, _ID)), "reasoning": _item_format(reasoning_item(_TEXT, _ID))}


class _Item:
    """The output item being streamed: its kind, id, position and the text or arguments so far.

    Its delta events are one format of bytes made once here (`delta_format`) with the sequence number and one
    orjson.dumps of the delta string (the stream's hot path, issue 23)."""

    __slots__ = ("call", "delta_format", "id", "id_json", "kind", "output_index", "parts", "sequence", "where")

    def __init__(
        self, kind: str, output_index: int, sequence: Iterator[int], call: dict[str, Any] | None = None
    ) -> None:
        self.kind = kind  # "reasoning" | "message" | "function_call"
        self.sequence = sequence  # the stream's sequence numbers
        self.id = new_id(_ID_PREFIX[kind])
        self.id_json = self.id.encode()  # (letters, digits and `_`: its JSON string's inside)
        self.output_index = output_index
        self.parts: list[str] = []  # joined when the item closes (`+=` on an attribute copies the text each time)
        self.call = call or {}
        # The fields its events start with (after type and sequence_number).
        self.where = b'"item_id":"%b","output_index":%d' % (self.id_json, output_index)
        before, after = _DELTA_FORMAT[kind]
        self.delta_format = before + self.where + after

    def delta(self, text: str) -> bytes:
        """A delta event of this item (the encoder's `_text_write` or `_reasoning_write` while it is open)."""
        self.parts.append(text)
        return self.delta_format % (next(self.sequence), orjson.dumps(text))

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
        self._sequence = itertools.count()
        self._item: _Item | None = None
        self._closed: list[tuple[_Item, str]] = []  # the items done, with their text (their dicts made on demand)
        self._output_json: list[bytes] = []  # each closed item encoded (as output_item.done sent it)
        self._calls: dict[int, _Item] = {}
        # The response object's encoding around its status, and after its output: made once per stream.
        self._response_head = b""
        self._response_model = b""
        self._echoed_json = b""

    def _event_fields(self, name: str, fields: bytes) -> bytes:
        """The event `name` whose data is `type`, `sequence_number` and then `fields` (JSON members, encoded)."""
        return _HEADS[name] + b"%d,%b}\n\n" % (next(self._sequence), fields)

    @property
    def output(self) -> list[dict[str, Any]]:
        """The output items closed so far, as the response object lists them."""
        return [item.item("completed", text) for item, text in self._closed]

    def _response(self, status: str, error: dict[str, Any] | None = None) -> dict[str, Any]:
        return response_object(
            self.request,
            response_id=self.response_id,
            model=self.model,
            created_at=self.created_at,
            status=status,
            output=self.output,
            usage=response_usage(self._usage),
            error=error,
        )

    def _response_json(self, status: str, error: dict[str, Any] | None = None) -> bytes:
        """orjson.dumps(self._response(status, error)) without building it: the request's echoed fields (Codex's
        whole tool list, say), the id and the model are encoded once per stream, the output items as they
        closed."""
        if not self._echoed_json:
            self._response_head = b'{"id":%b,"object":"response","created_at":%d,"status":"' % (
                orjson.dumps(self.response_id),
                self.created_at,
            )
            self._response_model = b'","model":%b,"output":[' % orjson.dumps(self.model)
            self._echoed_json = orjson.dumps(echoed_fields(self.request))[1:-1]
        usage = orjson.dumps(response_usage(self._usage)) if status != "in_progress" else b"null"
        return b'%b%b%b%b],"error":%b,"incomplete_details":%b,"usage":%b,%b}' % (
            self._response_head,
            status.encode(),
            self._response_model,
            b",".join(self._output_json),
            orjson.dumps(error),
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
        item = self._item = _Item(kind, len(self._closed), self._sequence, call)
        added = _ADDED[kind] % item.id_json if kind in _ADDED else orjson.dumps(item.item("in_progress"))
        fields = b'"output_index":%d,"item":%b' % (item.output_index, added)
        out.append(self._event_fields("response.output_item.added", fields))
        if kind == "reasoning":
            part = b',"summary_index":0,"part":{"type":"summary_text","text":""}'
            out.append(self._event_fields("response.reasoning_summary_part.added", item.where + part))
            self._reasoning_write = item.delta
        elif kind == "message":
            part = b',"content_index":0,"part":{"type":"output_text","text":"","annotations":[]}'
            out.append(self._event_fields("response.content_part.added", item.where + part))
            self._text_write = item.delta
        return item

    def _close(self, out: list[bytes]) -> None:
        item = self._item
        if item is None:
            return
        self._item = None
        self._text_write = self._reasoning_write = None
        text = item.text
        encoded = orjson.dumps(text)  # once, for the events that repeat it
        where = item.where
        if item.kind == "reasoning":
            fields = b',"summary_index":0,"text":%b' % encoded
            out.append(self._event_fields("response.reasoning_summary_text.done", where + fields))
            part = b',"summary_index":0,"part":{"type":"summary_text","text":%b}' % encoded
            out.append(self._event_fields("response.reasoning_summary_part.done", where + part))
        elif item.kind == "message":
            fields = b',"content_index":0,"text":%b,"logprobs":[]' % encoded
            out.append(self._event_fields("response.output_text.done", where + fields))
            part = b',"content_index":0,"part":{"type":"output_text","text":%b,"annotations":[]}' % encoded
            out.append(self._event_fields("response.content_part.done", where + part))
        else:
            out.append(self._event_fields("response.function_call_arguments.done", where + b',"arguments":' + encoded))
        if item.kind in _DONE:
            done_json = _DONE[item.kind] % (item.id_json, encoded)
        else:
            done_json = orjson.dumps(item.item("completed", text))
        self._closed.append((item, text))
        self._output_json.append(done_json)
        fields = b'"output_index":%d,"item":%b' % (item.output_index, done_json)
        out.append(self._event_fields("response.output_item.done", fields))

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        item = self._item
        if item is None or item.kind != "reasoning":
            item = self._open("reasoning", out)
        out.append(item.delta(text))

    def _text(self, text: str, out: list[bytes]) -> None:
        item = self._item
        if item is None or item.kind != "message":
            item = self._open("message", out)
        out.append(item.delta(text))

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
            out.append(item.delta(arguments))

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
