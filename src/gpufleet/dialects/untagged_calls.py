"""Qwen2.5's untagged tool calls: a ```json fence or bare JSON at the head of an answer.

Qwen2.5-Coder-1.5B-Instruct on llama.cpp answers a tools request with
```` ```json\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n``` ```` instead of the
`<tool_call>` tags its template asks for (recorded in tests/data/qwen25_tool_outputs). This module only
finds where such a candidate ends in a growing buffer, so that a stream holds text back only while it can
still become a call; `tool_calls.parse_untagged` decides whether the JSON found is a call.

Candidates are looked for only at the head of the answer (or right after another call): JSON inside
prose, or after it, is content. While the JSON is incomplete, its head must stay plausible (first key
`name`/`arguments`/`parameters`, the name one of the request's tools), so a JSON code answer streams
through without waiting for its end.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

HOLD: Literal["hold"] = "hold"
NOT_A_CALL: Literal["no"] = "no"
FENCE = "```"
CALL_KEYS = frozenset({"name", "arguments", "parameters"})
_FENCE_INFOS = ("", "json")  # ```json and a bare ``` fence; ```python and the like are code

_STRUCTURAL = re.compile(r'[{}\[\]"\\]')
# Qwen2.5's template shows the call as {{"name": ..., "arguments": ...}} (a format-string escape), and the
# model sometimes copies the doubled brace: `\{\{?` accepts it.
_BAD_HEAD = re.compile(r'\s*(?:\[\s*[^\s{]|(?:\[\s*)?\{\{?\s*[^\s"{])')
_FIRST_KEY = re.compile(r'\s*(?:\[\s*)?\{\{?\s*"((?:[^"\\]|\\.)*)"(?:\s*:\s*(?:"((?:[^"\\]|\\.)*)")?)?')


@dataclass(frozen=True)
class Candidate:
    """Complete JSON texts found at the head of the buffer, and where the candidate ends in it."""

    values: list[str]
    end: int


class UntaggedCallScanner:
    """Finds a fenced or bare JSON candidate at the head of a buffer that only grows between calls.

    `step(buf, final=False)` answers HOLD (wait for more text), NOT_A_CALL, or a `Candidate`; call
    `reset()` before scanning a buffer whose head changed.
    """

    def __init__(self, tool_names: frozenset[str]) -> None:
        self.tool_names = tool_names
        self.reset()

    def reset(self) -> None:
        """Forget the scan (the next `step` starts at the buffer's head)."""
        self._kind: str | None = None  # "fence" | "bare" once the head says which
        self._values: list[str] = []
        self._pos = 0  # everything before this index is scanned
        self._value_start: int | None = None  # start of the JSON value being scanned
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._head_ok = False  # the value's name is known to be a declared tool

    def step(self, buf: str, *, final: bool, fences_only: bool = False) -> Candidate | Literal["hold", "no"]:
        """Scan what `buf` added since the last step; `final` when no more text will come.

        `fences_only`: bare JSON is not a candidate (the buffer follows prose).
        """
        if self._kind is None:
            opened = self._open(buf, final=final, fences_only=fences_only)
            if opened != "open":
                return opened
        while True:
            if self._value_start is None:  # only in a fence: bare candidates are one value
                between = self._between_values(buf, final=final)
                if between is not None:
                    return between
            end = self._scan_value(buf)
            start = self._value_start
            assert start is not None
            if end < 0:
                if final:  # an unclosed bare value may still be the template's {{...} form
                    return Candidate([buf[start:]], len(buf)) if self._kind == "bare" else NOT_A_CALL
                return HOLD if self._plausible(buf[start : start + 400]) else NOT_A_CALL
            self._values.append(buf[start:end])
            self._value_start, self._pos = None, end
            if self._kind == "fence" and not self._plausible(buf[start:end][:400]):
                return NOT_A_CALL  # no need to wait for the closing fence
            if self._kind == "bare":  # a bare candidate is one JSON value (an object or a list)
                return Candidate(self._values, end)

    def _open(self, buf: str, *, final: bool, fences_only: bool) -> Literal["hold", "no", "open"]:
        i = len(buf) - len(buf.lstrip())
        head = buf[i:]
        if not head:
            return NOT_A_CALL if final else HOLD
        if head[0] in "{[" and not fences_only:
            self._kind, self._value_start, self._pos = "bare", i, i
            return "open"
        if not head.startswith(FENCE):
            return HOLD if not final and FENCE.startswith(head) else NOT_A_CALL
        newline = head.find("\n")
        info = head[len(FENCE) : None if newline < 0 else newline].strip().lower()
        if newline < 0:
            could_be = any(known.startswith(info) for known in _FENCE_INFOS)
            return HOLD if not final and could_be else NOT_A_CALL
        if info not in _FENCE_INFOS:
            return NOT_A_CALL
        self._kind, self._pos = "fence", i + newline + 1
        return "open"

    def _between_values(self, buf: str, *, final: bool) -> Candidate | Literal["hold", "no"] | None:
        """In a fence between JSON values: its end, the next value (None), or a verdict."""
        rest = buf[self._pos :]
        j = self._pos + len(rest) - len(rest.lstrip())
        if buf.startswith(FENCE, j):
            return Candidate(self._values, j + len(FENCE)) if self._values else NOT_A_CALL
        if j < len(buf) and buf[j] in "{[":
            self._value_start, self._pos = j, j
            self._depth, self._in_string, self._escaped, self._head_ok = 0, False, False, False
            return None
        if j < len(buf) and not FENCE.startswith(buf[j:]):
            return NOT_A_CALL
        if final:  # the answer ended before the closing fence: the calls are complete all the same
            return Candidate(self._values, len(buf)) if self._values else NOT_A_CALL
        return HOLD

    def _scan_value(self, buf: str) -> int:
        """Advance over the JSON value at `_value_start`; the index after it, or -1 while it is open."""
        depth, in_string, escaped = self._depth, self._in_string, self._escaped
        pos = self._pos
        while True:
            if escaped:  # the character after a backslash is never structural
                escaped = False
                pos += 1
                if pos > len(buf):
                    pos = len(buf)
                    escaped = True
                    break
            match = _STRUCTURAL.search(buf, pos)
            if match is None:
                pos = len(buf)
                break
            char, pos = match.group(), match.end()
            if in_string:
                if char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    self._depth, self._in_string, self._escaped, self._pos = 0, False, False, pos
                    return pos
        self._depth, self._in_string, self._escaped, self._pos = depth, in_string, escaped, pos
        return -1

    def _plausible(self, head: str) -> bool:
        """Could this incomplete JSON still be a call of a declared tool?"""
        if self._head_ok:
            return True
        if _BAD_HEAD.match(head):
            return False
        match = _FIRST_KEY.match(head)
        if match is None:
            return True
        if match.group(1) not in CALL_KEYS:
            return False
        if match.group(1) == "name" and match.group(2) is not None:
            try:
                name = json.loads(f'"{match.group(2)}"')
            except ValueError:
                return False
            self._head_ok = name in self.tool_names
            return self._head_ok
        return True
