"""The response side of the dialect: make any engine's answer look the same to clients.

- reasoning split out of `<think>` is exposed as both `reasoning_content` (Open WebUI, LiteLLM) and
  `reasoning` (vLLM's current name); an answer the engine already split only gets the other name;
- `<tool_call>` text becomes OpenAI `tool_calls` with `finish_reason: "tool_calls"`;
- the reasoning cap (`ResponsePlan.max_reasoning_chars`, tokens approximated as 4 characters each)
  truncates reasoning and reports it as `"gpufleet": {"reasoning_capped": true, ...}` on the response
  (stream: on the chunk where the cap was hit). In a stream a capped choice is over: nothing after the cut
  (reasoning, answer or calls) is relayed, `StreamTransformer.stop_upstream` tells the relay to cancel the
  generation, and the choice ends with `finish_reason: "length"`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gpufleet.dialects.plan import ResponsePlan
from gpufleet.dialects.reasoning import ReasoningStream, Segment
from gpufleet.dialects.registry import get_reasoning_parser, get_tool_parser
from gpufleet.dialects.structured import extract_json_text
from gpufleet.dialects.tool_calls import ToolCall, ToolCallStream

_DELTA_KEYS = ("role", "content", "reasoning", "reasoning_content", "tool_calls")


def _cap_report(plan: ResponsePlan) -> dict[str, Any]:
    return {"reasoning_capped": True, "max_reasoning_tokens": plan.max_reasoning_tokens}


def _engine_reasoning(fields: dict[str, Any]) -> str | None:
    for key in ("reasoning", "reasoning_content"):
        value = fields.get(key)
        if isinstance(value, str):
            return value
    return None


def transform_response(resp: dict[str, Any], plan: ResponsePlan) -> dict[str, Any]:
    """Transform a non-streamed `chat.completion` per the plan; unknown shapes are returned unchanged."""
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not isinstance(choices, list):
        return resp
    out = dict(resp)
    results = [_transform_choice(c, plan) for c in choices]
    out["choices"] = [choice for choice, _ in results]
    if any(capped for _, capped in results):
        out["gpufleet"] = _cap_report(plan)
    return out


def _transform_choice(choice: object, plan: ResponsePlan) -> tuple[object, bool]:
    """The transformed choice and whether its reasoning hit the cap."""
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        return choice, False
    choice = dict(choice)
    msg = dict(choice["message"])
    content = msg.get("content")
    reasoning = _engine_reasoning(msg)
    if reasoning is None and plan.reasoning_parser and isinstance(content, str):
        reasoning, content = get_reasoning_parser(plan.reasoning_parser).extract(
            content, starts_in_reasoning=plan.starts_in_reasoning
        )
    capped = False
    cap = plan.max_reasoning_chars
    if reasoning is not None and cap is not None and len(reasoning) > cap:
        reasoning, capped = reasoning[:cap], True
    if reasoning is not None:
        msg["reasoning"] = msg["reasoning_content"] = reasoning
    if plan.tool_parser and not msg.get("tool_calls") and isinstance(content, str):
        split = get_tool_parser(plan.tool_parser).extract(content, param_types=plan.tool_param_types)
        content = split.content
        if split.tool_calls:
            msg["tool_calls"] = [call.to_openai() for call in split.tool_calls]
            if choice.get("finish_reason") in ("stop", None):
                choice["finish_reason"] = "tool_calls"
    if plan.response_format is not None and isinstance(content, str):
        content = _unfenced_json(content)
    if content == "" and (reasoning is not None or msg.get("tool_calls")):
        content = None
    msg["content"] = content
    choice["message"] = msg
    return choice, capped


def _unfenced_json(content: str) -> str:
    """Drop a Markdown fence around a JSON answer (small models add one despite the instruction)."""
    inner = extract_json_text(content)
    if inner == content:
        return content
    try:
        json.loads(inner)
    except ValueError:
        return content
    return inner


@dataclass
class _Out:
    """One delta to emit for a choice, with its finish_reason and whether the cap was hit in it."""

    delta: dict[str, Any]
    finish_reason: str | None = None
    capped: bool = False


@dataclass
class _ChoiceStream:
    """Parser state of one choice index of a streamed response."""

    plan: ResponsePlan
    reasoning: ReasoningStream | None = None
    tools: ToolCallStream | None = None
    reasoning_chars: int = 0
    capped: bool = False
    finished: bool = False
    next_tool_index: int = 0
    events: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        plan = self.plan
        if plan.reasoning_parser:
            self.reasoning = get_reasoning_parser(plan.reasoning_parser).stream(
                starts_in_reasoning=plan.starts_in_reasoning
            )
        if plan.tool_parser:
            self.tools = get_tool_parser(plan.tool_parser).stream(param_types=plan.tool_param_types)

    def feed(self, delta: dict[str, Any], finish_reason: object) -> list[_Out]:
        """Turn one upstream delta (and its finish_reason) into the deltas to emit."""
        self.events = []
        engine_reasoning = _engine_reasoning(delta)
        if engine_reasoning:
            if self.reasoning is not None:  # the engine splits reasoning itself: stop parsing tags
                self._segments(self.reasoning.finish())
                self.reasoning = None
            self._add_reasoning(engine_reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self.reasoning is not None:
                self._segments(self.reasoning.feed(content))
            else:
                self._add_content(content)
        engine_calls = delta.get("tool_calls")
        if isinstance(engine_calls, list) and engine_calls:
            if self.tools is not None:  # the engine parsed the calls: pass them through untouched
                self._tool_items(self.tools.finish())
                self.tools = None
            if not self.capped:
                self.events.append(("engine_tool_calls", engine_calls))
        if isinstance(finish_reason, str):
            return self._build(delta, self._final_reason(finish_reason))
        return self._build(delta, None)

    def finish(self) -> list[_Out]:
        """Flush at end of stream when the upstream never sent a finish_reason."""
        self.events = []
        if self.capped:  # the relay stopped a capped generation: say the answer was cut short
            return self._build({}, self._final_reason("length"))
        self._flush()
        self.finished = True
        return self._build({}, None)

    def _final_reason(self, reason: str) -> str:
        self._flush()
        self.finished = True
        if self.capped:  # the answer was cut at the cap, whatever the engine says about its end
            return "length"
        emitted = self.tools is not None and self.tools.calls_emitted > 0
        return "tool_calls" if emitted and reason == "stop" else reason

    def _flush(self) -> None:
        if self.reasoning is not None:
            self._segments(self.reasoning.finish())
        if self.tools is not None:
            self._tool_items(self.tools.finish())

    def _segments(self, segments: list[Segment]) -> None:
        for seg in segments:
            if seg.kind == "reasoning":
                self._add_reasoning(seg.text)
            else:
                self._add_content(seg.text)

    def _add_reasoning(self, text: str) -> None:
        if self.capped:
            return
        cap = self.plan.max_reasoning_chars
        hit = cap is not None and self.reasoning_chars + len(text) > cap
        if hit and cap is not None:
            text = text[: cap - self.reasoning_chars]
            self.capped = True
        self.reasoning_chars += len(text)
        if text:
            self.events.append(("reasoning", text))
        if hit:
            self.events.append(("capped", None))

    def _add_content(self, text: str) -> None:
        if self.capped:  # past the cap: what 1-char chunks would never have relayed is not relayed from 7-char ones
            return
        if self.tools is not None:
            self._tool_items(self.tools.feed(text))
        else:
            self.events.append(("content", text))

    def _tool_items(self, items: list[str | ToolCall]) -> None:
        if self.capped:
            return
        for item in items:
            self.events.append(("content", item) if isinstance(item, str) else ("call", item))

    def _build(self, delta: dict[str, Any], finish_reason: str | None) -> list[_Out]:
        outs: list[_Out] = []
        for kind, value in self.events:
            last = outs[-1] if outs else None
            if kind == "capped":
                if last is None:
                    outs.append(_Out({}))
                outs[-1].capped = True
            elif kind in ("reasoning", "content") and last and _text_kind(last.delta) == kind:
                if kind == "reasoning":
                    last.delta["reasoning"] += value
                    last.delta["reasoning_content"] += value
                else:
                    last.delta["content"] += value
            elif kind == "reasoning":
                outs.append(_Out({"reasoning": value, "reasoning_content": value}))
            elif kind == "content":
                outs.append(_Out({"content": value}))
            elif kind == "call":
                index = self.next_tool_index
                self.next_tool_index += 1
                outs.append(
                    _Out(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "id": value.id,
                                    "type": "function",
                                    "function": {"name": value.name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                args = {"index": index, "function": {"arguments": value.arguments}}
                outs.append(_Out({"tool_calls": [args]}))
            else:
                outs.append(_Out({"tool_calls": value}))
        extra = {k: v for k, v in delta.items() if k not in _DELTA_KEYS}
        if "role" in delta:
            extra = {"role": delta["role"], **extra}
        if extra:
            if outs:
                outs[0].delta = {**extra, **outs[0].delta}
            else:
                outs.append(_Out({**extra, "content": ""}))
        if finish_reason is not None:
            if not outs:
                outs.append(_Out({}))
            outs[-1].finish_reason = finish_reason
        return outs


def _unchanged_by_passthrough(choice: object) -> bool:
    """True when a passthrough plan would rebuild this choice into an equal one, so it can be relayed as is.

    That is one content delta (role and unknown keys ride along), a role delta with `content: ""`, or an
    empty delta carrying the finish_reason; engine reasoning (mirrored under both names), engine tool calls,
    `content: null` (becomes "") and empty deltas without a finish_reason (dropped) take the general path.
    """
    if not isinstance(choice, dict) or not isinstance(choice.get("index"), int):
        return False
    finish = choice.get("finish_reason", 0)
    delta = choice.get("delta")
    if (finish is not None and not isinstance(finish, str)) or not isinstance(delta, dict):
        return False
    if "reasoning" in delta or "reasoning_content" in delta or "tool_calls" in delta:
        return False
    content = delta.get("content", 0)
    if isinstance(content, str):
        return bool(content) or len(delta) > 1
    return not delta and finish is not None


def _text_kind(delta: dict[str, Any]) -> str | None:
    keys = set(delta)
    if keys == {"reasoning", "reasoning_content"}:
        return "reasoning"
    if keys == {"content"}:
        return "content"
    return None


class StreamTransformer:
    """Transforms one streamed response: `feed` each upstream chunk, then `finish` at the end.

    Example: `t = StreamTransformer(prepared.plan); for c in upstream: send(t.feed(c)); send(t.finish())`.
    """

    def __init__(self, plan: ResponsePlan) -> None:
        self.plan = plan
        self._passthrough = plan.passthrough
        self._choices: dict[int, _ChoiceStream] = {}
        self._envelope: dict[str, Any] = {}

    @property
    def relays_plain_content(self) -> bool:
        """True when a chunk of one choice whose delta is non-empty text `content` (no reasoning, no tool calls)
        comes out of `feed` unchanged: the relay may then pass such chunks on without parsing them."""
        return self._passthrough and self.plan.kind == "chat"

    @property
    def reasoning_capped(self) -> bool:
        """True once any choice's reasoning hit the cap (the rest of its reasoning is dropped)."""
        return any(c.capped for c in self._choices.values())

    @property
    def stop_upstream(self) -> bool:
        """True when every unfinished choice hit the reasoning cap: nothing more it generates is relayed."""
        active = [c for c in self._choices.values() if not c.finished]
        return bool(active) and all(c.capped for c in active)

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """One upstream `chat.completion.chunk` in, zero or more chunks out (text may be held back).

        Chunks that come out unchanged are the very objects that went in (no copy).
        """
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if self.plan.kind != "chat" or not isinstance(choices, list) or not choices:
            return [chunk]  # completions, usage-only chunks, errors, unknown shapes: relay as they are
        if self._passthrough and len(choices) == 1 and _unchanged_by_passthrough(choices[0]):
            return [chunk]  # the common case of a plain model: nothing to rewrite (issue #3: was 25% of CPU)
        envelope = dict(chunk)  # a C-level copy beats a filtering comprehension on this hot path
        del envelope["choices"]
        envelope.pop("usage", None)
        self._envelope = envelope
        out: list[dict[str, Any]] = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            index = index if isinstance(index, int) else 0
            delta = choice.get("delta")
            if not isinstance(delta, dict):  # not a chat delta (e.g. a text completion choice)
                out.append({**self._envelope, "choices": [choice]})
                continue
            state = self._choices.get(index)
            if state is None:  # not setdefault: building a state (and its parsers) per chunk cost 10% of feed
                state = self._choices[index] = _ChoiceStream(self.plan)
            outs = state.feed(delta, choice.get("finish_reason"))
            extras = {k: v for k, v in choice.items() if k not in ("index", "delta", "finish_reason")}
            out.extend(self._chunks(index, outs, extras))
        if "usage" in chunk:
            if out:
                out[-1]["usage"] = chunk["usage"]
            else:
                out.append({**self._envelope, "choices": [], "usage": chunk["usage"]})
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Flush text still held back (a cut tag, an unclosed call) when the upstream ends."""
        out: list[dict[str, Any]] = []
        for index, state in sorted(self._choices.items()):
            if not state.finished:
                out.extend(self._chunks(index, state.finish(), {}))
        return out

    def _chunks(self, index: int, outs: list[_Out], extras: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = []
        for i, item in enumerate(outs):
            choice: dict[str, Any] = {"index": index, "delta": item.delta, "finish_reason": item.finish_reason}
            if i == 0:
                choice.update(extras)  # logprobs and the like ride on the first piece (read-only: not copied)
            chunk = {**self._envelope, "choices": [choice]}
            if item.capped:
                chunk["gpufleet"] = _cap_report(self.plan)
            chunks.append(chunk)
        return chunks
