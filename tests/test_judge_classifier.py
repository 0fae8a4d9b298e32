"""The optional LLM-judge `auto` classifier: the judge's request and the reading of its answer (tables), and for
real as `router.auto.classifier: {kind: judge}` with the embedded Qwen2.5-Coder-1.5B (slow).
"""

from __future__ import annotations

import doctest
import json
from typing import Any

import httpx
import pytest

import gpufleet.router.judge_classifier as judge_module
from gpufleet.config import parse_config
from gpufleet.dialects.structured import parse_response_format
from gpufleet.gateway import build_app, running
from gpufleet.router.classifier import Tier
from gpufleet.router.judge_classifier import EXAMPLES, JUDGE_PROMPT, TIER_SCHEMA, judge_body, parse_judgement
from gpufleet.tiers.labelled_set import load_labelled
from tests.standin_upstream import StandInUpstream

R, M, C = Tier.ROUTINE, Tier.MODERATE, Tier.COMPLEX


@pytest.mark.parametrize(
    "content, want",
    [
        ('"moderate"', M),  # what the constrained judge answers
        ("moderate", M),
        ("  Complex.\n", C),
        ("'ROUTINE'", R),
        ('{"tier": "complex"}', C),
        ('{"tier": "Routine", "why": "not moderate work"}', R),  # the tier field wins over words elsewhere
        ('```json\n"moderate"\n```', M),
        ("Tier: routine", R),
        ("", None),
        ("   ", None),
        ("I cannot tell.", None),
        ('"simple"', None),
        ('{"tier": 2}', None),
        ("routine or moderate", None),  # two tiers named: unreadable, not a guess
        ("complexity", None),  # a word that merely contains a tier name
    ],
)
def test_parse_judgement_reads_a_tier_or_says_none(content: str, want: Tier | None) -> None:
    assert parse_judgement(content) is want


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


def test_judge_body_is_a_greedy_seeded_short_constrained_call_without_thinking() -> None:
    body = judge_body(chat_body("hi"), "judge", seed=7)
    assert body["model"] == "judge"
    assert (body["temperature"], body["seed"]) == (0, 7)
    assert body["max_tokens"] <= 8  # '"moderate"' is 3-4 tokens
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["response_format"]["json_schema"]["schema"] == TIER_SCHEMA
    assert TIER_SCHEMA["enum"] == [t.value for t in Tier]
    assert body["messages"][0] == {"role": "system", "content": JUDGE_PROMPT}
    assert "stream" not in body


def test_judge_body_response_format_is_one_the_gateway_accepts() -> None:
    """The gateway forwards it to llama.cpp and vLLM, and validates it for engines without guided decoding."""
    response_format, schema = parse_response_format(judge_body(chat_body("hi"), "judge"))
    assert response_format is not None
    assert schema == TIER_SCHEMA


def test_worked_examples_come_before_the_request_as_answered_turns() -> None:
    messages = judge_body(chat_body("What is 2 + 2?"), "judge")["messages"]
    shots = messages[1:-1]
    assert [m["role"] for m in shots] == ["user", "assistant"] * len(EXAMPLES)
    assert [json.loads(m["content"]) for m in shots[1::2]] == [tier.value for _, _, tier in EXAMPLES]
    assert {tier for _, _, tier in EXAMPLES} == set(Tier)
    assert messages[-1] == {"role": "user", "content": "Request (14 characters):\n<<<\nWhat is 2 + 2?\n>>>"}


def test_worked_examples_are_tune_prompts_never_holdout3() -> None:
    """holdout3 is the honest figure in docs/router-auto.md: none of it may be shown to the judge."""
    items = load_labelled()
    holdout3 = [json.dumps(i["request"]) for i in items if i["split"] == "holdout3"]
    tune = [json.dumps(i["request"]) for i in items if i["split"] == "tune"]
    for text, _, _ in EXAMPLES:
        head = json.dumps(text)[1:41]  # the example's start, escaped as in the request bodies
        assert not any(head in body for body in holdout3), text
        assert any(head in body for body in tune), text


def test_judge_sees_the_last_user_turn_its_size_and_its_context() -> None:
    payload = {
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "y" * 2000}]},
            {"role": "tool", "content": "result 1"},
            {"role": "tool", "content": "result 2"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    last = judge_body(payload, "judge", max_chars=100)["messages"][-1]["content"]
    assert last == (
        "Request (2,000 characters, the first 100 shown; message 6 of a conversation with 2 tool results;"
        " tools offered):\n<<<\n" + "y" * 100 + "\n>>>"
    )
    assert "first question" not in last and "be terse" not in last


def test_judge_reads_a_completions_prompt_and_an_empty_request() -> None:
    assert judge_body({"prompt": "Once upon a time"}, "j")["messages"][-1]["content"].endswith(
        "<<<\nOnce upon a time\n>>>"
    )
    assert "<<<\n(empty)\n>>>" in judge_body({"messages": []}, "j")["messages"][-1]["content"]


def test_module_examples_hold() -> None:
    assert doctest.testmod(judge_module).failed == 0


@pytest.mark.slow
async def test_embedded_qwen_judge_picks_the_auto_tier_through_the_gateway() -> None:
    """`router.auto.classifier: {kind: judge}` end to end: real judge calls (Qwen2.5-Coder-1.5B Q4 on the embedded
    engine) through the gateway itself; no stub. The tier models are a stand-in (only the headers are read).

    Which tier the judge picks is its opinion (benchmarks/classifier_judge.py measures how often it agrees with
    the labels); any valid run gets a readable verdict for every request, so the judge, not the rules, decided.
    """
    judge = {
        "engine": "llamacpp",
        "source": "package:qwen2.5-coder-1.5b-instruct",
        "context": 2048,
        "parallel": 1,
        "threads": 2,
        "preload": True,
    }
    tiers = StandInUpstream().start()
    remote = {"engine": "remote", "url": tiers.url}
    config = {
        "models": {"judge": judge, "small": remote, "mid": remote, "big": remote},
        "router": {
            "auto": {
                "routine": "small",
                "moderate": "mid",
                "complex": "big",
                "classifier": {"kind": "judge", "model": "judge", "timeout_s": 120},
            }
        },
    }
    prompts = [
        "hi",
        "Write a Python function that merges two sorted lists into one sorted list.",
        "Prove that the square root of 3 is irrational.",
    ]
    app = build_app(parse_config(config))
    try:
        async with (
            running(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=300) as http,
        ):
            for prompt in prompts:
                response = await http.post("/v1/chat/completions", json={"model": "auto", **chat_body(prompt)})
                assert response.status_code == 200, response.text
                assert response.headers["x-gpufleet-tier-by"] == "judge", (prompt, response.headers)
                assert response.headers["x-gpufleet-tier"] in {t.value for t in Tier}
    finally:
        tiers.stop()
