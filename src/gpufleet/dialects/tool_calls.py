"""Tool-call parsers: Qwen's `<tool_call>` text turned into OpenAI `tool_calls`.

Two body formats sit between `<tool_call>` and `</tool_call>` (vllm-facts §4):
- hermes / qwen3_json: `{"name": "fn", "arguments": {...}}` (arguments may also be a JSON string);
- qwen3_xml / qwen3_coder: `<function=fn>\\n<parameter=key>\\nvalue\\n</parameter>\\n</function>`.
Each parser tries its own format first and the other second, so a route configured with the wrong
parser name still works. A block that parses as neither stays in the content verbatim (never an
exception): the client sees what the model wrote. Whitespace next to a parsed call is dropped.

A parser with `untagged=True` (Qwen2.5) also reads calls written without tags, as a ```json fence or
bare JSON at the head of the answer, when the name is one of the request's tools (`untagged_calls`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gpufleet.dialects.textstream import releasable_len
from gpufleet.dialects.untagged_calls import CALL_KEYS, FENCE, HOLD, Candidate, UntaggedCallScanner

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"

ParamTypes = Mapping[str, Mapping[str, str]]

_FUNCTION_RE = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|\Z)", re.S)
_LINE_FENCE = re.compile(r"\n[ \t]*```")
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


def _loads_untagged(text: str) -> object:
    """One JSON value; also Qwen2.5's template notation `{{"name": ..., "arguments": {...}}}` (or with one
    closing brace less), which the model copies from its system prompt."""
    candidates = [text]
    if text.startswith("{{"):
        candidates += [text[1:], text[1:-1]] if text.endswith("}}") else [text[1:]]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def parse_untagged(values: list[str], tool_names: frozenset[str]) -> list[ToolCall] | None:
    """Calls from untagged JSON values (objects or lists of them); None unless every item is a call of
    a declared tool with nothing but `name` and `arguments`/`parameters` (a JSON answer is not a call)."""
    calls: list[ToolCall] = []
    for text in values:
        value = _loads_untagged(text.strip())
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict) or not set(item) <= CALL_KEYS:
                return None
            name = item.get("name")
            if not isinstance(name, str) or name not in tool_names:
                return None
            call = _json_call(item)
            if call is None:
                return None
            calls.append(call)
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


# A step of ToolCallStream's drain: yields what it releases, returns whether to go on.
_Step = Generator[str | ToolCall, None, bool]


@dataclass(frozen=True)
class TaggedToolParser:
    """A `<tool_call>` parser; `formats` is the order in which body formats are tried.

    With `untagged`, a fenced or bare JSON call at the head of the answer counts too (Qwen2.5).
    """

    name: str
    formats: tuple[str, ...] = ("json", "xml")
    untagged: bool = False

    def parse_body(self, body: str, param_types: ParamTypes | None = None) -> list[ToolCall] | None:
        """Parse the text between the tags into calls, or None when it is malformed."""
        for fmt in self.formats:
            calls = parse_json_body(body) if fmt == "json" else parse_xml_body(body, param_types)
            if calls:
                return calls
        return None

    def extract(
        self, text: str, *, param_types: ParamTypes | None = None, tool_names: Iterable[str] | None = None
    ) -> ToolCallSplit:
        """Split a whole output into content and tool calls.

        `tool_names` are the request's tools (default: the keys of `param_types`); untagged calls must
        name one of them.
        """
        stream = self.stream(param_types=param_types, tool_names=tool_names)
        items = [*stream.feed(text), *stream.finish()]  # one code path: whole and streamed text agree
        calls = [item for item in items if isinstance(item, ToolCall)]
        content = "".join(item for item in items if isinstance(item, str))
        return ToolCallSplit(content if content.strip() or not calls else None, calls)

    def stream(
        self, *, param_types: ParamTypes | None = None, tool_names: Iterable[str] | None = None
    ) -> ToolCallStream:
        """A fresh streaming parser for one response (`tool_names` as in `extract`)."""
        names = frozenset(param_types or {}) if tool_names is None else frozenset(tool_names)
        return ToolCallStream(self, param_types, names)


class ToolCallStream:
    """Incremental `<tool_call>` parser: feed content pieces, get text and `ToolCall`s back.

    A call is released whole once `</tool_call>` arrives (its arguments are one JSON document, so
    streaming them piecewise would only let clients see invalid JSON: QwenLM/Qwen3 #1568). An untagged
    call (`TaggedToolParser.untagged`) is held only while it can still become one: a ```json fence at the
    head of the answer or at a line start, bare JSON at the head; text after a rejected fence is a code
    block, whose closing fence is plain text.
    """

    def __init__(
        self, parser: TaggedToolParser, param_types: ParamTypes | None = None, tool_names: frozenset[str] = frozenset()
    ) -> None:
        self._parser = parser
        self._param_types = param_types
        self._tool_names = tool_names
        self._untagged = UntaggedCallScanner(tool_names) if parser.untagged and tool_names else None
        # "head": the buffer starts the answer (or follows a call): a fence or bare JSON may be a call;
        # "fence": the buffer starts with a fence at a line start; None: no untagged candidate.
        self._candidate: str | None = "head" if self._untagged is not None else None
        self._in_code_block = False  # inside a fenced block that was not a call
        self._in_call = False
        self._buf = ""
        self._ws_before = ""  # whitespace before an open tag or fence: dropped if the call parses
        self._after_call = False  # whitespace after a parsed call is dropped
        self.calls_emitted = 0

    def feed(self, text: str) -> list[str | ToolCall]:
        """Take the next piece of content; return text and calls that can be released now."""
        self._buf += text
        return list(self._drain(final=False))

    def finish(self) -> list[str | ToolCall]:
        """Release everything at the end of the output (an unclosed call is parsed as it stands)."""
        return list(self._drain(final=True))

    def _parsed(self, calls: list[ToolCall]) -> list[ToolCall]:
        self.calls_emitted += len(calls)
        self._after_call = True
        self._ws_before = ""
        self._candidate = "head" if self._untagged is not None else None
        return calls

    def _drain(self, *, final: bool) -> Iterable[str | ToolCall]:
        # Each step yields what it can release and returns whether to go on (False: wait for more text).
        while True:
            if self._in_call:
                if not (yield from self._close_call(final=final)):
                    return
                continue
            if self._after_call:
                self._buf = self._buf.lstrip()
                if not self._buf:
                    return
                self._after_call = False
            if self._candidate is not None:
                if not (yield from self._take_candidate(final=final)):
                    return
                continue
            if not (yield from self._scan_text(final=final)):
                return

    def _close_call(self, *, final: bool) -> _Step:
        """Inside `<tool_call>`: once it closes (or the output ends), release the calls or, malformed, the text."""
        end = self._buf.find(CLOSE_TAG)
        if end < 0 and not final:
            return False
        body = self._buf if end < 0 else self._buf[:end]
        raw = OPEN_TAG + body + ("" if end < 0 else CLOSE_TAG)
        self._buf = "" if end < 0 else self._buf[end + len(CLOSE_TAG) :]
        self._in_call = False
        calls = self._parser.parse_body(body, self._param_types)
        if calls:
            yield from self._parsed(calls)
        else:
            yield self._ws_before + raw
        self._ws_before = ""
        return True

    def _take_candidate(self, *, final: bool) -> _Step:
        """An untagged call may start the buffer: release its calls, or the text once it cannot be one."""
        calls = self._untagged_calls(final=final)
        if calls is None:
            return False
        if calls:
            yield from self._parsed(calls)
            return True
        text, self._ws_before = self._ws_before, ""
        stripped = self._buf.lstrip()
        if stripped.startswith(FENCE):  # a code block opens here: its closing fence is text
            head = len(self._buf) - len(stripped) + len(FENCE)
            text, self._buf = text + self._buf[:head], self._buf[head:]
            self._in_code_block = True
        if text:
            yield text
        return True

    def _scan_text(self, *, final: bool) -> _Step:
        """Plain text: release it up to the next open tag or line fence (then go on), or what is safe (then wait)."""
        start = self._buf.find(OPEN_TAG)
        fence = self._line_fence()
        if fence >= 0 and (start < 0 or fence < start):
            if self._in_code_block:  # the closing fence of a code block: plain text
                self._in_code_block = False
                text, self._buf = self._buf[: fence + len(FENCE)], self._buf[fence + len(FENCE) :]
                yield text
                return True
            self._candidate = "fence"
            yield from self._release_before(fence, skip=0)
            return True
        if start >= 0:
            self._in_call = True
            yield from self._release_before(start, skip=len(OPEN_TAG))
            return True
        cut = len(self._buf) if final else self._releasable()
        if cut:
            yield self._buf[:cut]
            self._buf = self._buf[cut:]
        return False

    def _release_before(self, index: int, *, skip: int) -> Iterable[str]:
        """Release the text before `index` (its trailing whitespace is held) and drop `skip` characters from there."""
        before = self._buf[:index]
        text = before.rstrip()
        self._ws_before = before[len(text) :]
        self._buf = self._buf[index + skip :]
        if text:
            yield text

    def _line_fence(self) -> int:
        """Index of the first ``` that opens a line in the buffer (untagged parsers only), or -1."""
        if self._untagged is None:
            return -1
        match = _LINE_FENCE.search(self._buf)
        return -1 if match is None else match.end() - len(FENCE)

    def _releasable(self) -> int:
        cut = releasable_len(self._buf, OPEN_TAG, hold_whitespace=True)
        if self._untagged is not None and self._buf.endswith("`"):  # "\n`" may become a fence
            ticks = self._buf.rstrip("`")
            line = ticks.rstrip(" \t")
            if len(self._buf) - len(ticks) < len(FENCE) and line.endswith("\n"):
                cut = min(cut, len(line.rstrip()))  # with the whitespace before it
        return cut

    def _untagged_calls(self, *, final: bool) -> list[ToolCall] | None:
        """Calls of the candidate at the head of the buffer (consumed), [] when it is none, None to wait."""
        assert self._untagged is not None
        found = self._untagged.step(self._buf, final=final, fences_only=self._candidate == "fence")
        if found == HOLD:
            return None
        self._untagged.reset()
        self._candidate = None
        calls = parse_untagged(found.values, self._tool_names) if isinstance(found, Candidate) else None
        if not calls or not isinstance(found, Candidate):
            return []
        self._buf = self._buf[found.end :]
        return calls
