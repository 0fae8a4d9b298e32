"""StreamTransformer and transform_response beyond the recorded fixtures: pass-through of what the
engine already split or parsed, the reasoning cap, several choices, odd chunks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpufleet.dialects import ResponsePlan, StreamTransformer, transform_response

THINK = ResponsePlan(thinking=True, reasoning_parser="qwen3", starts_in_reasoning=True)
TOOLS = ResponsePlan(tool_parser="hermes")


def chunk(
    delta: dict[str, Any] | None = None, finish_reason: str | None = None, index: int = 0, **extra: Any
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta or {}, "finish_reason": finish_reason, **extra}
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


def run(plan: ResponsePlan, chunks: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], StreamTransformer]:
    t = StreamTransformer(plan)
    out = [c for ch in chunks for c in t.feed(ch)]
    return out + t.finish(), t


def joined(out: list[dict[str, Any]], key: str, index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get(key) or "" for c in out if c["choices"] and c["choices"][0]["index"] == index
    )


@pytest.mark.parametrize("name", ["reasoning", "reasoning_content"])
def test_engine_split_reasoning_is_mirrored_and_content_untouched(name: str) -> None:
    # starts_in_reasoning would take content for reasoning: once the engine splits, gpufleet must not
    out, _ = run(
        THINK,
        [
            chunk({"role": "assistant", name: "Let me think."}),
            chunk({name: " Done."}),
            chunk({"content": "Answer <b>."}),
            chunk({}, "stop"),
        ],
    )
    assert joined(out, "reasoning") == joined(out, "reasoning_content") == "Let me think. Done."
    assert joined(out, "content") == "Answer <b>."
    assert out[0]["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize("name", ["reasoning", "reasoning_content"])
def test_engine_split_reasoning_whole_response_gets_both_names(name: str) -> None:
    resp = {
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", name: "Because.", "content": "42"}}
        ]
    }
    msg = transform_response(resp, THINK)["choices"][0]["message"]
    assert msg["reasoning"] == msg["reasoning_content"] == "Because." and msg["content"] == "42"


def test_engine_tool_calls_pass_through_untouched() -> None:
    call = [{"index": 0, "id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    out, _ = run(
        TOOLS, [chunk({"role": "assistant", "content": ""}), chunk({"tool_calls": call}), chunk({}, "tool_calls")]
    )
    deltas = [c["choices"][0]["delta"] for c in out]
    assert [d["tool_calls"] for d in deltas if "tool_calls" in d] == [call]
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    resp = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "<tool_call>x</tool_call>", "tool_calls": call},
            }
        ]
    }
    msg = transform_response(resp, TOOLS)["choices"][0]["message"]
    assert msg["tool_calls"] == call and msg["content"] == "<tool_call>x</tool_call>"


def test_tool_call_with_length_finish_keeps_length() -> None:
    text = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
    out, _ = run(TOOLS, [chunk({"content": text}), chunk({}, "length")])
    assert out[-1]["choices"][0]["finish_reason"] == "length"


def test_usage_chunks_and_odd_chunks_pass_through() -> None:
    usage = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 5}}
    t = StreamTransformer(TOOLS)
    assert t.feed(usage) == [usage]
    assert t.feed({"error": {"message": "boom"}}) == [{"error": {"message": "boom"}}]
    held = t.feed({**chunk({"content": "<tool_"}), "usage": {"total_tokens": 6}})
    assert held == [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": {"total_tokens": 6},
        }
    ]
    assert joined(t.finish(), "content") == "<tool_"


def test_bad_choice_entries_do_not_crash() -> None:
    t = StreamTransformer(TOOLS)
    odd = {"index": "x", "delta": "nope", "finish_reason": None}
    assert t.feed({"choices": ["junk", odd]}) == [{"choices": [odd]}]
    assert transform_response({"choices": [None, {"message": "x"}]}, TOOLS) == {"choices": [None, {"message": "x"}]}
    assert transform_response({"object": "error"}, TOOLS) == {"object": "error"}


def test_choices_of_n_greater_than_one_are_parsed_independently() -> None:
    call = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    chunks = [
        chunk({"content": call[:15]}, index=0),
        chunk({"content": "Hello <to"}, index=1),
        chunk({"content": call[15:]}, index=0),
        chunk({"content": "ol> world"}, index=1),
        chunk({}, "stop", index=0),
        chunk({}, "stop", index=1),
    ]
    out, _ = run(TOOLS, chunks)
    assert joined(out, "content", index=1) == "Hello <tool> world"
    assert joined(out, "content", index=0) == ""
    finishes = {
        c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in out if c["choices"][0]["finish_reason"]
    }
    assert finishes == {0: "tool_calls", 1: "stop"}


def test_logprobs_ride_on_the_first_emitted_piece() -> None:
    out, _ = run(THINK, [chunk({"content": "a</think>b"}, logprobs={"content": [{"token": "a"}]})])
    assert out[0]["choices"][0]["logprobs"] == {"content": [{"token": "a"}]}
    assert "logprobs" not in out[1]["choices"][0]


def test_reasoning_cap_truncates_reports_and_asks_to_stop_upstream() -> None:
    plan = ResponsePlan(thinking=True, reasoning_parser="qwen3", max_reasoning_chars=12)
    t = StreamTransformer(plan)
    out = t.feed(chunk({"role": "assistant", "content": "<think>\nabcdefgh"}))
    assert not t.stop_upstream and not t.reasoning_capped
    out += t.feed(chunk({"content": "ijklmnop qrs"}))
    assert t.reasoning_capped and t.stop_upstream  # still thinking: the relay may cancel the upstream
    out += t.finish()
    assert joined(out, "reasoning_content") == "abcdefghijkl"
    assert [c["gpufleet"] for c in out if "gpufleet" in c] == [{"reasoning_capped": True, "max_reasoning_tokens": 3}]
    assert out[-1]["choices"][0]["finish_reason"] == "length"


def test_capped_choice_relays_nothing_after_the_cut_whatever_the_chunking() -> None:
    plan = ResponsePlan(thinking=True, reasoning_parser="qwen3", max_reasoning_chars=4)
    out, t = run(
        plan, [chunk({"content": "<think>long thoughts"}), chunk({"content": " more</think>\n\nOK"}), chunk({}, "stop")]
    )
    assert joined(out, "reasoning") == "long" and joined(out, "content") == ""
    assert out[-1]["choices"][0]["finish_reason"] == "length" and not t.stop_upstream  # finished
    one_chunk, _ = run(plan, [chunk({"content": "<think>long thoughts more</think>\n\nOK"}), chunk({}, "stop")])
    assert joined(one_chunk, "content") == "" and one_chunk[-1]["choices"][0]["finish_reason"] == "length"


def test_reasoning_cap_applies_to_engine_split_reasoning_and_whole_responses() -> None:
    t = StreamTransformer(ResponsePlan(max_reasoning_chars=5))
    out = t.feed(chunk({"reasoning": "0123456789"}))
    assert joined(out, "reasoning_content") == "01234" and t.stop_upstream
    resp = transform_response(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "<think>0123456789</think>ok"},
                }
            ]
        },
        ResponsePlan(thinking=True, reasoning_parser="qwen3", max_reasoning_chars=5),
    )
    assert resp["choices"][0]["message"]["reasoning_content"] == "01234"
    assert resp["choices"][0]["message"]["content"] == "ok"
    assert resp["gpufleet"] == {"reasoning_capped": True, "max_reasoning_tokens": 1}


def test_no_cap_no_report() -> None:
    out, t = run(THINK, [chunk({"content": "x" * 10_000 + "</think>y"}), chunk({}, "stop")])
    assert not any("gpufleet" in c for c in out) and not t.stop_upstream
    assert len(joined(out, "reasoning")) == 10_000


def test_stream_without_finish_reason_is_flushed_by_finish() -> None:
    out, _ = run(TOOLS, [chunk({"content": "Hi <tool_ca"})])
    assert joined(out, "content") == "Hi <tool_ca"
    assert all(c["choices"][0]["finish_reason"] is None for c in out)


def test_role_chunk_is_kept_even_when_its_content_is_held_back() -> None:
    out, _ = run(TOOLS, [chunk({"role": "assistant", "content": "<tool"}), chunk({"content": "box>"})])
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert joined(out, "content") == "<toolbox>"


def test_text_completion_chunks_pass_through() -> None:
    choice = {"index": 0, "text": "<think>x", "logprobs": None, "finish_reason": None}
    c = {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}
    assert StreamTransformer(ResponsePlan(kind="completion")).feed(c) == [c]
    assert StreamTransformer(THINK).feed(c) == [c]


def test_finish_reason_in_the_same_chunk_as_the_closing_tag() -> None:
    out, _ = run(
        TOOLS,
        [chunk({"content": '<tool_call>{"name": "f", "arguments": {}}'}), chunk({"content": "</tool_call>"}, "stop")],
    )
    assert out[-1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


# A plan that is not a passthrough but rewrites nothing in these chunks: it always takes the general path.
GENERAL = ResponsePlan(max_reasoning_chars=10**9)
PLAIN_CHUNKS = [
    chunk({"role": "assistant", "content": None}),
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": ""}),
    chunk({"content": "Hi"}),
    chunk({"content": "Hi", "role": "assistant", "refusal": None}),
    chunk({"content": "Hi"}, logprobs={"content": [{"token": "Hi", "logprob": -0.1}]}),
    chunk({}),
    chunk({}, "stop"),
    chunk({"content": "!"}, "length"),
    chunk({"reasoning_content": "hmm"}),
    chunk({"reasoning": "hmm", "content": None}),
    chunk(
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    ),
    chunk({"foo": 1}),
    {**chunk({"content": "x"}), "usage": {"total_tokens": 3}},
    {"id": "c1", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "no index"}}]},
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [
            {"index": 0, "delta": {"content": "a"}, "finish_reason": None},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
        ],
    },
]


@pytest.mark.parametrize("upstream", PLAIN_CHUNKS, ids=range(len(PLAIN_CHUNKS)))
def test_passthrough_plan_relays_chunks_like_the_general_path(upstream: dict[str, Any]) -> None:
    before = copy.deepcopy(upstream)
    fast, general = StreamTransformer(ResponsePlan()), StreamTransformer(GENERAL)
    assert fast.feed(upstream) == general.feed(upstream)
    assert fast.finish() == general.finish() == []
    assert upstream == before  # neither path modifies its input


def test_plain_llama_cpp_content_chunks_are_relayed_without_a_copy() -> None:
    t = StreamTransformer(ResponsePlan())
    for c in [chunk({"content": "Hello"}), chunk({"content": " world"}, logprobs=None), chunk({}, "stop")]:
        (out,) = t.feed(c)
        assert out is c
