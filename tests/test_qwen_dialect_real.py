"""The Qwen dialect through the real embedded Qwen2.5-Coder-1.5B-Instruct (the `make run` default).

On llama.cpp this model answers a tools request with a ```json fence instead of <tool_call> tags, and
llama.cpp returns it as plain content (tests/data/qwen25_tool_outputs holds the recorded outputs); the
gateway's qwen2_5 parser turns it into OpenAI tool_calls. Sampling is greedy and seeded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from gpufleet.dialects import DOCUMENT_CLASSIFICATION_SCHEMA
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = [pytest.mark.qwen, pytest.mark.slow]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current local time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
}
TOOLS: list[Any] = [WEATHER_TOOL, TIME_TOOL]
# llama.cpp reuses a cached prompt prefix, and the reused KV changes greedy output: after other requests, the
# round trip's first answer once fenced only the arguments. Without the cache each prompt answers alike.
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 42, "max_tokens": 200, "extra_body": {"cache_prompt": False}}
# Without a system prompt, the model answers a tool result by repeating the call (recorded); agents send one.
AGENT_SYSTEM = {
    "role": "system",
    "content": "You are a helpful assistant. When a tool result is available, answer the user in plain "
    "sentences using it.",
}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    model = {
        "engine": "llamacpp",
        "source": "package:qwen2.5-coder-1.5b-instruct",
        "context": 8192,
        "parallel": 2,
        "threads": 2,
        "preload": True,
    }
    gateway = start_gateway({"models": {"qwen": model}}, tmp_path_factory.mktemp("qwen"), ready_timeout_s=300)
    yield gateway
    stop_gateway(gateway)


@pytest.fixture(scope="module")
def llm(qwen: ServedGateway) -> Iterator[openai.OpenAI]:
    """One client for the module, closed at the end (an unclosed pooled socket fails the session)."""
    with openai.OpenAI(base_url=f"{qwen.url}/v1", api_key="x", max_retries=0, timeout=300) as client:
        yield client


def test_structured_output_validates_against_seed_002_schema(llm: openai.OpenAI) -> None:
    document = "Invoice 2291 from ACME Corp, dated 2026-02-01: 3 laptops, total 4,500 EUR, due in 30 days."
    reply = llm.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": f"Classify this document: {document}"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "classification", "schema": DOCUMENT_CLASSIFICATION_SCHEMA},
        },
        max_tokens=200,
        temperature=0,
        seed=42,
    )
    data = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(data, DOCUMENT_CLASSIFICATION_SCHEMA)


def test_tool_call_comes_back_as_openai_tool_calls(llm: openai.OpenAI) -> None:
    reply = llm.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": "What's the weather in Paris?"}], tools=TOOLS, **GREEDY
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None  # the ```json fence did not leak into the content
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_streamed_tool_call_arrives_as_tool_call_deltas(llm: openai.OpenAI) -> None:
    content, calls, finish = "", {}, None
    with llm.chat.completions.create(
        model="qwen",
        messages=[{"role": "user", "content": "What time is it in Europe/Berlin?"}],
        tools=TOOLS,
        stream=True,
        **GREEDY,
    ) as stream:
        chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                if delta.index not in calls:  # the first delta of a call names it
                    assert delta.id and delta.type == "function" and delta.function and delta.function.name
                    calls[delta.index] = {"name": delta.function.name, "arguments": ""}
                calls[delta.index]["arguments"] += (delta.function.arguments if delta.function else None) or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert list(calls) == [0] and calls[0]["name"] == "get_time"
    assert json.loads(calls[0]["arguments"]) == {"timezone": "Europe/Berlin"}


def test_tool_result_round_trip_ends_in_an_answer_using_the_result(llm: openai.OpenAI) -> None:
    messages: list[Any] = [AGENT_SYSTEM, {"role": "user", "content": "What's the weather in Paris?"}]
    first = llm.chat.completions.create(model="qwen", messages=messages, tools=TOOLS, **GREEDY)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"
    messages.append(first.choices[0].message)  # the openai client serializes its own message object
    messages.append(
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature_c": 17, "condition": "light rain"}),
        }
    )
    second = llm.chat.completions.create(model="qwen", messages=messages, tools=TOOLS, **GREEDY)
    answer = second.choices[0]
    assert answer.finish_reason == "stop" and not answer.message.tool_calls
    assert "17" in (answer.message.content or "")


def test_json_answer_to_an_unrelated_question_stays_content(llm: openai.OpenAI) -> None:
    question = "Give me a JSON object with keys name and age for Alice, who is 30."
    reply = llm.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": question}], tools=TOOLS, **GREEDY
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "Alice" in (choice.message.content or "")


@pytest.mark.parametrize("stream", [False, True])
def test_unrelated_question_with_tools_gets_a_well_formed_answer(llm: openai.OpenAI, stream: bool) -> None:
    question = {"role": "user", "content": "Write a haiku about the sea."}
    # 64 tokens hold a haiku (or a call); a longer answer ends as "length", which the assertions accept.
    request: dict[str, Any] = {"model": "qwen", "messages": [question], "tools": TOOLS, **GREEDY, "max_tokens": 64}
    if stream:
        with llm.chat.completions.create(stream=True, **request) as events:
            chunks = list(events)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        names = [
            d.function.name
            for c in chunks
            if c.choices
            for d in c.choices[0].delta.tool_calls or []
            if d.function and d.function.name
        ]
    else:
        choice = llm.chat.completions.create(**request).choices[0]
        finish, content = [choice.finish_reason], choice.message.content or ""
        names = [c.function.name for c in choice.message.tool_calls or []]
        for c in choice.message.tool_calls or []:
            json.loads(c.function.arguments)
    assert len(finish) == 1 and finish[0] in ("stop", "tool_calls", "length")
    assert content.strip() or names  # either an answer or a call, never an empty message
    assert all(name in ("get_weather", "get_time") for name in names)
