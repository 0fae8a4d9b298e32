"""Recorded Qwen outputs (tests/data/qwen, tests/data/qwen25_tool_outputs) through transform_response
and StreamTransformer.

Each stream test cuts the output at every index (and into single characters) and checks that the
reassembled stream equals the whole-text result and the fixture's expectation; fixtures recorded from
a real engine also replay its own chunking (`stream_pieces`). A seeded fuzz test does the same for
random outputs built from tag and fence fragments.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from gpufleet.dialects import ResponsePlan, StreamTransformer, transform_response

DATA = Path(__file__).parent / "data"
FIXTURES = {
    f"{p.parent.name}/{p.stem}": json.loads(p.read_text(encoding="utf-8"))
    for folder in ("qwen", "qwen25_tool_outputs")
    for p in sorted((DATA / folder).glob("*.json"))
}


def plan_of(fixture: dict[str, Any]) -> ResponsePlan:
    return ResponsePlan(**fixture["plan"])


def completion(text: str, finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-rec",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen3-8b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
    }


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-rec",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "qwen3-8b",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def upstream_chunks(pieces: list[str], finish_reason: str) -> list[dict[str, Any]]:
    """What vLLM / llama.cpp stream: a role chunk, content pieces, an empty delta with finish_reason."""
    return [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": p}) for p in pieces),
        chunk({}, finish_reason),
    ]


def normalized_message(resp: dict[str, Any]) -> dict[str, Any]:
    """The parts of a transformed response the fixtures specify (ids are random)."""
    choice = resp["choices"][0]
    msg = choice["message"]
    assert msg.get("reasoning") == msg.get("reasoning_content")
    calls = [
        {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
        for c in msg.get("tool_calls") or []
    ]
    for c in msg.get("tool_calls") or []:
        assert c["type"] == "function" and c["id"].startswith("call_")
    return {
        "reasoning": msg.get("reasoning_content"),
        "content": msg.get("content") or None,
        "tool_calls": calls,
        "finish_reason": choice["finish_reason"],
    }


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold streamed chunks back into one message, checking the delta protocol on the way."""
    reasoning, content, finish = "", "", None
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-rec"
        for choice in c["choices"]:
            assert finish is None, "nothing may follow the finish_reason"
            delta = choice["delta"]
            assert delta.get("reasoning") == delta.get("reasoning_content")
            reasoning += delta.get("reasoning_content") or ""
            content += delta.get("content") or ""
            for tc in delta.get("tool_calls") or []:
                if tc["index"] not in calls:  # the first delta of a call carries id, type and name
                    assert tc["id"].startswith("call_") and tc["type"] == "function"
                    calls[tc["index"]] = {"name": tc["function"]["name"], "arguments": ""}
                calls[tc["index"]]["arguments"] += tc["function"].get("arguments", "")
            finish = choice["finish_reason"] or finish
    assert list(calls) == list(range(len(calls)))
    return {
        "reasoning": reasoning or None,
        "content": content or None,
        "tool_calls": [{"name": c["name"], "arguments": json.loads(c["arguments"])} for c in calls.values()],
        "finish_reason": finish,
    }


def run_stream(plan: ResponsePlan, pieces: list[str], finish_reason: str) -> list[dict[str, Any]]:
    t = StreamTransformer(plan)
    out: list[dict[str, Any]] = []
    for c in upstream_chunks(pieces, finish_reason):
        out.extend(t.feed(c))
    out.extend(t.finish())
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_whole_response_matches_recorded_expectation(name: str) -> None:
    f = FIXTURES[name]
    resp = transform_response(completion(f["output"], f["finish_reason"]), plan_of(f))
    assert normalized_message(resp) == f["expected"]
    assert resp["usage"]["total_tokens"] == 30 and resp["id"] == "chatcmpl-rec"


@pytest.mark.parametrize("name", FIXTURES)
def test_stream_cut_at_every_index_reassembles_to_whole_result(name: str) -> None:
    f = FIXTURES[name]
    plan, text = plan_of(f), f["output"]
    whole = normalized_message(transform_response(completion(text, f["finish_reason"]), plan))
    for cut in range(len(text) + 1):
        got = reassemble(run_stream(plan, [text[:cut], text[cut:]], f["finish_reason"]))
        assert got == whole, f"cut at {cut}: {text[:cut]!r} | {text[cut:]!r}"


@pytest.mark.parametrize("name", FIXTURES)
def test_stream_one_character_per_chunk_reassembles_to_expectation(name: str) -> None:
    f = FIXTURES[name]
    out = run_stream(plan_of(f), list(f["output"]), f["finish_reason"])
    assert reassemble(out) == f["expected"]
    assert out[0]["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize("name", [n for n, f in FIXTURES.items() if "stream_pieces" in f])
def test_recorded_engine_chunking_reassembles_to_expectation(name: str) -> None:
    f = FIXTURES[name]
    assert "".join(f["stream_pieces"]) == f["output"]
    assert reassemble(run_stream(plan_of(f), f["stream_pieces"], f["finish_reason"])) == f["expected"]


@pytest.mark.parametrize("name", [n for n, f in FIXTURES.items() if f["expected"]["tool_calls"]])
def test_streamed_tool_call_markup_never_reaches_content(name: str) -> None:
    f = FIXTURES[name]
    fenced_content = "```" in (f["expected"]["content"] or "")
    for cut in range(len(f["output"]) + 1):
        for c in run_stream(plan_of(f), [f["output"][:cut], f["output"][cut:]], f["finish_reason"]):
            for choice in c["choices"]:
                text = choice["delta"].get("content") or ""
                if "malformed" not in name:
                    assert "<tool" not in text and "</" not in text and "<function" not in text
                if not fenced_content and "malformed" not in name:
                    assert "```" not in text and '"name"' not in text


PIECES = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<",
    "</",
    "tool",
    "_call>",
    "think>",
    '{"name": "f", "arguments": {"a": 1}}',
    '{"name": "g"}',
    "{",
    "}",
    "<function=f>",
    "<parameter=a>",
    "</parameter>",
    "</function>",
    " ",
    "\n",
    "\n\n",
    "x",
    "Hello",
    "é",
    "```",
    "```json\n",
    "`",
    "[",
    "]",
    '{"name": "h"}',
    '{{"name": "f"}}',
    '"',
    "\\",
]
PLANS = {
    "thinking+hermes": ResponsePlan(thinking=True, reasoning_parser="qwen3", tool_parser="hermes"),
    "open+xml": ResponsePlan(
        thinking=True, reasoning_parser="qwen3", starts_in_reasoning=True, tool_parser="qwen3_xml"
    ),
    "off+hermes": ResponsePlan(reasoning_parser="qwen3", tool_parser="hermes"),
    "capped": ResponsePlan(thinking=True, reasoning_parser="qwen3", max_reasoning_chars=7, tool_parser="hermes"),
    "qwen2_5": ResponsePlan(tool_parser="qwen2_5", tool_param_types={"f": {}, "g": {"a": "integer"}}),
}


@pytest.mark.parametrize("plan_name", PLANS)
def test_random_outputs_stream_like_whole_text(plan_name: str) -> None:
    rng = random.Random(plan_name)
    plan = PLANS[plan_name]
    for _ in range(600):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 14)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(1, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        resp = transform_response(completion(text, "stop"), plan)
        whole = normalized_message(resp)
        if "gpufleet" in resp:  # capped: a stream relays nothing after the cut and ends with "length"
            whole = {**whole, "content": None, "tool_calls": [], "finish_reason": "length"}
        assert reassemble(run_stream(plan, pieces, "stop")) == whole, repr(pieces)
