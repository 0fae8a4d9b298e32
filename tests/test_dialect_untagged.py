"""Qwen2.5's untagged tool calls (```json fences, bare JSON) through the qwen2_5 parser.

The recorded outputs in tests/data/qwen25_tool_outputs run through test_dialect_fixtures; these tests pin
what a stream releases when, and which JSON is not a call.
"""

from __future__ import annotations

import json

import pytest

from gpufleet.dialects import ResponsePlan, StreamTransformer, get_tool_parser, model_dialect
from gpufleet.dialects.tool_calls import ToolCall

NAMES = frozenset({"get_weather", "get_time"})
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def fed(pieces: list[str], names: frozenset[str] = NAMES) -> list[list[str | ToolCall]]:
    """What the stream releases after each piece (the last entry is `finish`)."""
    stream = get_tool_parser("qwen2_5").stream(tool_names=names)
    return [stream.feed(p) for p in pieces] + [stream.finish()]


def calls_of(text: str, names: frozenset[str] = NAMES) -> tuple[str | None, list[tuple[str, object]]]:
    split = get_tool_parser("qwen2_5").extract(text, tool_names=names)
    return split.content, [(c.name, json.loads(c.arguments)) for c in split.tool_calls]


def test_qwen2_5_models_get_the_untagged_parser() -> None:
    assert model_dialect("qwen2.5-coder-1.5b-instruct").tool_call_parser == "qwen2_5"
    assert model_dialect("Qwen/Qwen2.5-7B-Instruct-AWQ").tool_call_parser == "qwen2_5"
    assert model_dialect("Qwen/Qwen3-8B").tool_call_parser == "hermes"


def test_plain_text_passes_through_at_once() -> None:
    assert fed(["Hello", " world", "!"]) == [["Hello"], [" world"], ["!"], []]


@pytest.mark.parametrize(
    ("pieces", "released_at"),
    [
        (["```", "py", "thon\nprint(1)"], 1),  # not a json fence once "p" arrives
        (["{", '"city"', ': "Paris"}'], 1),  # first key is not name/arguments
        (["```json\n", '{"name": "', 'add", "arguments": {}}'], 2),  # the name is not a declared tool
        (["[", "1, 2]"], 1),
        (["{}", " is empty"], 0),
    ],
)
def test_json_that_cannot_be_a_call_is_released_without_waiting_for_its_end(
    pieces: list[str], released_at: int
) -> None:
    out = fed(pieces)
    assert all(step == [] for step in out[:released_at])
    assert out[released_at] and all(isinstance(x, str) for step in out for x in step)
    assert "".join(x for step in out for x in step if isinstance(x, str)) == "".join(pieces)


def test_a_possible_call_is_held_until_its_json_ends_then_released_whole() -> None:
    pieces = ["```", "json", "\n", '{"name": "get', '_weather", ', '"arguments": {"city": "Paris"}}', "\n```"]
    out = fed(pieces)
    assert out[:6] == [[], [], [], [], [], []] and out[7] == []
    (call,) = out[6]  # released when its fence closed
    assert isinstance(call, ToolCall) and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}


def test_prose_before_a_fenced_call_streams_at_once() -> None:
    out = fed(["To know, I call:", "\n```json\n", CALL, "\n```"])
    assert out[0] == ["To know, I call:"] and out[1] == []
    assert [c.name for step in out for c in step if isinstance(c, ToolCall)] == ["get_weather"]


def test_without_declared_tools_json_is_content() -> None:
    text = f"```json\n{CALL}\n```"
    assert calls_of(text, frozenset()) == (text, [])
    assert get_tool_parser("hermes").extract(text, tool_names=NAMES).content == text  # hermes reads tags only


def test_bare_json_after_prose_is_content() -> None:
    text = f"You could send {CALL}"
    assert calls_of(text) == (text, [])


@pytest.mark.parametrize(
    "text",
    [
        "```json\n{",
        '```json\n{"name": "get_weather", "arguments": {"city": "Pa',
        '{"name": "get_weather", "arguments": 1}',
        '{"name": "get_weather", "arguments": "{oops"}',
        "{{{{",
        "}}}}",
        "```\n```",
        "```json\n]\n```",
        '["get_weather"]',
        '[{"name": "get_weather", "arguments": {}}, 3]',
        '{"name": ["get_weather"]}',
        "```json\n" + "[" * 500,
        '{"name": "get_weather", "arguments": {"s": "\\',
        "\\u",
        '{"name": "\\ud800"}',
    ],
)
def test_malformed_candidates_become_content_never_an_exception(text: str) -> None:
    assert calls_of(text) == (text, [])
    for cut in range(len(text) + 1):
        items = [x for step in fed([text[:cut], text[cut:]]) for x in step]
        assert "".join(str(x) for x in items) == text


def test_stream_transformer_emits_openai_tool_call_deltas_and_finish_reason() -> None:
    plan = ResponsePlan(tool_parser="qwen2_5", tool_param_types={"get_weather": {"city": "string"}})
    t = StreamTransformer(plan)

    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [*t.feed(chunk({"role": "assistant", "content": None}))]
    for piece in ["```json\n", CALL, "\n```"]:
        out += t.feed(chunk({"content": piece}))
    out += t.feed(chunk({}, "stop"))
    deltas = [c["choices"][0]["delta"] for c in out]
    first, args = (d["tool_calls"][0] for d in deltas if "tool_calls" in d)
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert args == {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(d.get("content") for d in deltas)


def test_long_whitespace_runs_are_held_and_released_in_one_piece() -> None:
    # tool_choice=required makes the model pad with newlines until max_tokens (recorded); a regex that
    # rescanned the held run on every piece once made 2,000 newlines take half a minute.
    out = fed(["Hello"] + ["\n"] * 3000 + ["`", "`", "x"])
    assert out[0] == ["Hello"] and all(step == [] for step in out[1:3002])
    assert "".join(x for step in out for x in step if isinstance(x, str)) == "Hello" + "\n" * 3000 + "``x"
