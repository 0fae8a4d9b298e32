"""Tool-call parsers: Qwen's `<tool_call>` text turned into OpenAI `tool_calls`.

Two body formats sit between `<tool_call>` and `</tool_call>` (vllm-facts §4):
- hermes / qwen3_json: `{"name": "fn", "arguments": {...}}` (arguments may also be a JSON string);
- qwen3_xml / qwen3_coder: `<function=fn>\\n<parameter=key>\\nvalue\\n</parameter>\\n</function>`.
Each parser tries its own format first and the other second, so a route configured with the wrong
parser name still works. A block that parses as neither stays in the content verbatim (never an
exception): the client sees what the model wrote. Whitespace next to a parsed call is dropped.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gpufleet.dialects.textstream import releasable_len

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"

ParamTypes = Mapping[str, Mapping[str, str]]

_FUNCTION_RE = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|\Z)", re.S)
_PARAMETER_RE = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.S)


def new_call_id() -> str:
    """An OpenAI-style tool call id ("call_" + 24 hex digits)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    """One parsed call; `arguments` is a JSON object serialized as a string, as OpenAI sends it."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)

    def to_openai(self) -> dict[str, Any]:
        """The `message.tool_calls[]` entry."""
        function = {"name": self.name, "arguments": self.arguments}
        return {"id": self.id, "type": "function", "function": function}


class ToolCallSplit(NamedTuple):
    """A whole output split into content (None when only whitespace remains) and calls."""

    content: str | None
    tool_calls: list[ToolCall]


def tool_param_types(tools: object) -> dict[str, dict[str, str]]:
    """Map function name -> parameter -> JSON type from an OpenAI `tools` list (bad entries skipped)."""
    out: dict[str, dict[str, str]] = {}
    if not isinstance(tools, list):
        return out
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        params = fn.get("parameters")
        props = params.get("properties") if isinstance(params, dict) else None
        types: dict[str, str] = {}
        for key, spec in (props or {}).items() if isinstance(props, dict) else ():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if isinstance(kind, list):  # ["string", "null"] is still a string parameter
                kind = next((k for k in kind if k != "null"), None)
            if isinstance(kind, str):
                types[key] = kind
        out[fn["name"]] = types
    return out


def _dump_arguments(args: Mapping[str, Any]) -> str:
    return json.dumps(args, ensure_ascii=False)


def _json_call(obj: object) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    args = obj.get("arguments", obj.get("parameters"))
    if args is None:
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(obj["name"], _dump_arguments(args))


def parse_json_body(body: str) -> list[ToolCall] | None:
    """Parse a hermes body: one JSON object, or several separated by whitespace; None if malformed."""
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    pos, text = 0, body.strip()
    while pos < len(text):
        try:
            obj, end = decoder.raw_decode(text, pos)
        except ValueError:
            return None
        call = _json_call(obj)
        if call is None:
            return None
        calls.append(call)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return calls or None


def _xml_value(raw: str, kind: str | None) -> Any:
    # Qwen3-Coder puts each value on its own line: drop exactly the framing newlines.
    value = raw[1:] if raw.startswith("\n") else raw
    value = value[:-1] if value.endswith("\n") else value
    if kind == "string":
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_xml_body(body: str, param_types: ParamTypes | None = None) -> list[ToolCall] | None:
    """Parse a qwen3_xml/qwen3_coder body (`<function=…>` blocks); None if malformed."""
    text = body.strip()
    if not text.startswith("<function="):
        return None
    calls: list[ToolCall] = []
    for match in _FUNCTION_RE.finditer(text):
        name = match.group(1).strip()
        if not name:
            return None
        types = (param_types or {}).get(name, {})
        args = {
            p.group(1).strip(): _xml_value(p.group(2), types.get(p.group(1).strip()))
            for p in _PARAMETER_RE.finditer(match.group(2))
        }
        calls.append(ToolCall(name, _dump_arguments(args)))
    return calls or None


@dataclass(frozen=True)
class TaggedToolParser:
    """A `<tool_call>` parser; `formats` is the order in which body formats are tried."""

    name: str
    formats: tuple[str, ...] = ("json", "xml")

    def parse_body(self, body: str, param_types: ParamTypes | None = None) -> list[ToolCall] | None:
        """Parse the text between the tags into calls, or None when it is malformed."""
        for fmt in self.formats:
            calls = parse_json_body(body) if fmt == "json" else parse_xml_body(body, param_types)
            if calls:
                return calls
        return None

    def extract(self, text: str, *, param_types: ParamTypes | None = None) -> ToolCallSplit:
        """Split a whole output into content and tool calls."""
        pieces: list[str | list[ToolCall]] = []  # text, or the calls of one parsed block
        pos = 0
        while True:
            start = text.find(OPEN_TAG, pos)
            if start < 0:
                pieces.append(text[pos:])
                break
            pieces.append(text[pos:start])
            end = text.find(CLOSE_TAG, start + len(OPEN_TAG))
            stop = len(text) if end < 0 else end + len(CLOSE_TAG)
            body = text[start + len(OPEN_TAG): len(text) if end < 0 else end]
            calls = self.parse_body(body, param_types)
            pieces.append(calls if calls else text[start:stop])
            pos = stop
        return _join(pieces)

    def stream(self, *, param_types: ParamTypes | None = None) -> ToolCallStream:
        """A fresh streaming parser for one response."""
        return ToolCallStream(self, param_types)


def _join(pieces: list[str | list[ToolCall]]) -> ToolCallSplit:
    calls: list[ToolCall] = []
    texts: list[str] = []
    for i, piece in enumerate(pieces):
        if isinstance(piece, list):
            calls.extend(piece)
            continue
        if i > 0 and isinstance(pieces[i - 1], list):
            piece = piece.lstrip()
        if i + 1 < len(pieces) and isinstance(pieces[i + 1], list):
            piece = piece.rstrip()
        texts.append(piece)
    content = "".join(texts)
    return ToolCallSplit(content if content.strip() or not calls else None, calls)


class ToolCallStream:
    """Incremental `<tool_call>` parser: feed content pieces, get text and `ToolCall`s back.

    A call is released whole once `</tool_call>` arrives (its arguments are one JSON document, so
    streaming them piecewise would only let clients see invalid JSON: QwenLM/Qwen3 #1568).
    """

    def __init__(self, parser: TaggedToolParser, param_types: ParamTypes | None = None) -> None:
        self._parser = parser
        self._param_types = param_types
        self._in_call = False
        self._buf = ""
        self._ws_before = ""  # whitespace before an open tag: dropped if the call parses
        self._after_call = False  # whitespace after a parsed call is dropped
        self.calls_emitted = 0

    def feed(self, text: str) -> list[str | ToolCall]:
        """Take the next piece of content; return text and calls that can be released now."""
        self._buf += text
        return list(self._drain(final=False))

    def finish(self) -> list[str | ToolCall]:
        """Release everything at the end of the output (an unclosed call is parsed as it stands)."""
        return list(self._drain(final=True))

    def _drain(self, *, final: bool) -> Iterable[str | ToolCall]:
        while True:
            if self._in_call:
                end = self._buf.find(CLOSE_TAG)
                if end < 0 and not final:
                    return
                body = self._buf if end < 0 else self._buf[:end]
                raw = OPEN_TAG + body + ("" if end < 0 else CLOSE_TAG)
                self._buf = "" if end < 0 else self._buf[end + len(CLOSE_TAG):]
                self._in_call = False
                calls = self._parser.parse_body(body, self._param_types)
                if calls:
                    self.calls_emitted += len(calls)
                    self._after_call = True
                    yield from calls
                else:
                    yield self._ws_before + raw
                self._ws_before = ""
                continue
            if self._after_call:
                self._buf = self._buf.lstrip()
                if not self._buf:
                    return
                self._after_call = False
            start = self._buf.find(OPEN_TAG)
            if start >= 0:
                before = self._buf[:start]
                text = before.rstrip()
                self._ws_before = before[len(text):]
                self._buf = self._buf[start + len(OPEN_TAG):]
                self._in_call = True
                if text:
                    yield text
                continue
            cut = len(self._buf) if final else releasable_len(self._buf, OPEN_TAG, hold_whitespace=True)
            if cut:
                yield self._buf[:cut]
                self._buf = self._buf[cut:]
            return
