"""Bad request bodies are the client's problem: 400 naming the field, never forwarded, never a 500.

Issue 12: `"tools": [{"type": "function"}]` made llama.cpp answer 500, which put the route into cooldown
for everyone; 256–1024-deep JSON and a 300-deep json_schema made 500s; `POST /chat` with a list made a
500; a `^(a+)+$` schema pattern froze the event loop. Upstream here is the STAND-IN from
standin_upstream.py; test_request_validation_real.py drives the real embedded engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.config import RouteDefaults, parse_config
from gpufleet.gateway import build_app, running
from gpufleet.gateway.body import MAX_JSON_DEPTH
from gpufleet.router.defaults import TOKEN_LIMIT_FIELDS, apply_request_defaults
from tests.standin_upstream import StandInUpstream


class FixedAnswerUpstream(StandInUpstream):
    """The STAND-IN upstream, answering every chat with `content` (a model's output chosen by the test)."""

    content = "{}"

    async def _chat(self, request: Request) -> Response:
        self.received.append(orjson.loads(await request.body()))
        answer = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "model": "meaningless",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": self.content}}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
        return Response(orjson.dumps(answer), media_type="application/json")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FixedAnswerUpstream]:
    server = FixedAnswerUpstream().start()
    yield server
    server.stop()


@pytest.fixture
async def http(upstream: FixedAnswerUpstream) -> AsyncIterator[httpx.AsyncClient]:
    upstream.received.clear()
    upstream.content = "{}"
    config = parse_config(
        {
            "models": {"echo": {"engine": "remote", "url": upstream.url}},
            "personas": {"clerk": {"route": "echo", "system_prompt": "You file things."}},
        }
    )
    app = build_app(config)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client,
    ):
        yield client


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}


def error_of(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    return dict(error)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(tools=[{"type": "function"}]), "tools[0].function"),
        (chat(tools=[{"type": "function", "function": {}}]), "tools[0].function.name"),
        (chat(tools=[{"type": "function", "function": {"name": "has space"}}]), "tools[0].function.name"),
        (chat(tools=[{"type": "retrieval", "function": {"name": "f"}}]), "tools[0].type"),
        (
            chat(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]),
            "tools[0].function.parameters",
        ),
        (chat(tools={"type": "function"}), "tools"),
        (chat(tool_choice="sometimes"), "tool_choice"),
        (chat(tool_choice={"type": "function", "function": {}}), "tool_choice.function.name"),
        (chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0]"),
        (chat(messages=[{"role": "user", "content": [{"text": "no type"}]}]), "messages[0].content[0].type"),
        (
            chat(messages=[{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (chat(messages=[{"role": "tool", "content": "r", "tool_call_id": 7}]), "messages[0].tool_call_id"),
        (chat(response_format="json"), "response_format"),
        # Issue 21: llama.cpp answered each of these with HTTP 500 (and the target went into cooldown).
        (chat(messages=[{"role": "user", "content": "hi", "name": None}]), "messages[0]"),
        (chat(messages=[{"role": "tool", "content": "r", "tool_call_id": None}]), "messages[0]"),
        (
            chat(messages=[{"role": "assistant", "content": "a", "reasoning_content": 5}]),
            "messages[0].reasoning_content",
        ),
        (chat(max_tokens=2**32), "max_tokens"),
        (chat(max_tokens=2**63 - 1), "max_tokens"),
        (chat(max_completion_tokens=2**32), "max_completion_tokens"),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}),
            "response_format.json_schema.schema",
        ),
        (
            chat(
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {
                            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
                            "$ref": "#/$defs/a",
                        },
                    },
                }
            ),
            "response_format.json_schema.schema",
        ),
        (
            chat(
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
                    },
                }
            ),
            "response_format.json_schema.schema",
        ),
        (
            chat(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"$ref": "https://example.com/schema.json"}},
                }
            ),
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_malformed_tools_and_messages_get_400_naming_the_field_and_are_not_forwarded(
    http: httpx.AsyncClient, upstream: FixedAnswerUpstream, body: dict[str, Any], param: str
) -> None:
    error = error_of(await http.post("/v1/chat/completions", json=body))
    assert error["param"] == param
    assert error["message"].startswith(param)
    assert upstream.received == []
    targets = (await http.get("/status")).json()["targets"]
    assert [t["failures"] for t in targets] == [0]  # the client's mistake is not the target's


async def test_valid_tools_and_unknown_fields_pass_through_untouched(
    http: httpx.AsyncClient, upstream: FixedAnswerUpstream
) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "d",
                "strict": True,
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:x"}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    body = chat(
        messages=messages,
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        chat_template_kwargs={"enable_thinking": False},
        cache_prompt=False,
    )
    response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    sent = upstream.received[0]
    assert sent["tools"] == tools and sent["messages"] == messages
    assert sent["chat_template_kwargs"] == {"enable_thinking": False} and sent["cache_prompt"] is False


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 256, 600, 1000])
async def test_deeply_nested_body_gets_400_not_500(http: httpx.AsyncClient, depth: int) -> None:
    body = chat(metadata={"x": nested(depth)})
    response = await http.post(
        "/v1/chat/completions", content=_dumps_deep(body), headers={"content-type": "application/json"}
    )
    error = error_of(response)
    assert error["code"] == "too_deep"
    assert f"more than {MAX_JSON_DEPTH} levels" in error["message"]
    assert error["param"].startswith("metadata.x[0]")


async def test_body_at_the_depth_limit_is_accepted(http: httpx.AsyncClient) -> None:
    body = chat(metadata={"x": nested(MAX_JSON_DEPTH - 3)})  # body → metadata → x → lists: exactly the limit
    assert (await http.post("/v1/chat/completions", json=body)).status_code == 200


async def test_json_schema_300_deep_gets_400(http: httpx.AsyncClient) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"a": schema}}
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}})
    response = await http.post(
        "/v1/chat/completions", content=_dumps_deep(body), headers={"content-type": "application/json"}
    )
    error = error_of(response)
    assert error["param"].startswith("response_format.json_schema.schema.properties.a")


def _dumps_deep(value: Any) -> bytes:
    # orjson refuses to write more than 254 levels; the stdlib writes any depth (what an attacker sends).
    import json
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        return json.dumps(value).encode()
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize("body", [[1, 2], "hello", 42, True])
async def test_persona_chat_with_a_non_object_body_gets_400(http: httpx.AsyncClient, body: Any) -> None:
    error = error_of(await http.post("/chat", json=body))
    assert "must be a JSON object" in error["message"]


# --- response_format patterns: linear time, clear answers --------------------------------------------------


def pattern_format(pattern: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}, "required": ["x"]}
    return {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}


async def test_pathological_pattern_is_checked_in_linear_time_while_others_are_served(
    http: httpx.AsyncClient, upstream: FixedAnswerUpstream
) -> None:
    # With Python's backtracking `re`, 40 a's and a b against ^(a+)+$ take 2^40 steps: the loop would freeze.
    upstream.content = orjson.dumps({"x": "a" * 40 + "b"}).decode()
    evil = http.post("/v1/chat/completions", json=chat(response_format=pattern_format("^(a+)+$")))
    other = http.post("/v1/chat/completions", json=chat())
    # wait_for only turns a frozen loop into a failure instead of a hung test run.
    bad, good = await asyncio.wait_for(asyncio.gather(evil, other), timeout=60)
    assert good.status_code == 200
    error = error_of(bad, 502)
    assert error["code"] == "structured_output_invalid"
    assert "does not match '^(a+)+$'" in error["message"]


async def test_pattern_matching_answer_passes(http: httpx.AsyncClient, upstream: FixedAnswerUpstream) -> None:
    upstream.content = orjson.dumps({"x": "aaaa"}).decode()
    response = await http.post("/v1/chat/completions", json=chat(response_format=pattern_format("^(a+)+$")))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)a", "(?<!b)a"])
async def test_pattern_needing_backtracking_features_gets_400_naming_it(
    http: httpx.AsyncClient, upstream: FixedAnswerUpstream, pattern: str
) -> None:
    error = error_of(await http.post("/v1/chat/completions", json=chat(response_format=pattern_format(pattern))))
    assert error["param"] == "response_format.json_schema.schema"
    assert repr(pattern) in error["message"] and "RE2" in error["message"]
    assert upstream.received == []


# --- max_tokens_cap covers every spelling of "max tokens" ------------------------------------------------


@pytest.mark.parametrize(
    ("client", "expected"),
    [
        ({}, {"max_tokens": 8}),
        ({"max_tokens": 5}, {"max_tokens": 5}),
        ({"max_tokens": 500}, {"max_tokens": 8}),
        ({"n_predict": 500}, {"max_tokens": 8, "n_predict": 8}),
        ({"n_predict": -1}, {"max_tokens": 8, "n_predict": 8}),  # llama.cpp: -1 = until the context is full
        ({"max_completion_tokens": 500}, {"max_completion_tokens": 8}),
        ({"max_new_tokens": 10**9, "max_tokens": 3}, {"max_tokens": 3, "max_new_tokens": 8}),
        ({"num_predict": "lots"}, {"max_tokens": 8, "num_predict": 8}),
        ({"n_predict": True}, {"max_tokens": 8, "n_predict": 8}),
    ],
)
def test_token_cap_applies_to_every_alias(client: dict[str, Any], expected: dict[str, Any]) -> None:
    out = apply_request_defaults({"model": "m", **client}, RouteDefaults(max_tokens_cap=8), kind="chat")
    assert {k: out[k] for k in TOKEN_LIMIT_FIELDS if k in out} == expected


async def test_a_recursive_schema_that_descends_into_the_value_is_allowed(
    http: httpx.AsyncClient, upstream: FixedAnswerUpstream
) -> None:
    # A tree: each node's children are nodes. Recursion that consumes the value ends; only a $ref cycle does not.
    upstream.content = '{"name": "root", "children": [{"name": "leaf", "children": []}]}'
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "required": ["name", "children"],
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
            }
        },
        "$ref": "#/$defs/node",
    }
    response = await http.post(
        "/v1/chat/completions",
        json=chat(response_format={"type": "json_schema", "json_schema": {"name": "tree", "schema": schema}}),
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == upstream.content


async def test_embeddings_for_auto_get_400_not_a_chat_tier(
    http: httpx.AsyncClient, upstream: FixedAnswerUpstream
) -> None:
    error = error_of(await http.post("/v1/embeddings", json={"model": "auto", "input": "hi"}))
    assert error["param"] == "model" and "embedding model" in error["message"]
    assert upstream.received == []


def test_media_parts_are_found_for_text_only_models() -> None:
    from gpufleet.errors import RequestError
    from gpufleet.gateway.protocol import check_text_only, media_in

    body = chat(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:x"}},
                    {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
                ],
            }
        ]
    )
    assert media_in(body) == {"images", "audio"}
    assert media_in(chat()) == set()
    with pytest.raises(RequestError, match="does not take audio, images") as caught:
        check_text_only(body, "smol")
    assert caught.value.status_code == 400 and caught.value.param == "messages"


@pytest.mark.parametrize(
    ("status", "message", "fault"),
    [
        (500, "Failed to parse messages: [json.exception.type_error.302] type must be string, but is null", True),
        (500, "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj", True),
        (500, "CUDA error: out of memory", False),
        (502, "Failed to parse messages", False),
    ],
)
def test_a_llamacpp_500_about_the_request_is_the_clients_fault(status: int, message: str, fault: bool) -> None:
    from gpufleet.gateway.errors import is_request_fault

    assert is_request_fault(status, message) is fault


def test_a_text_only_target_refuses_media_and_a_token_limit_is_capped_to_its_context() -> None:
    from gpufleet.errors import RequestError
    from gpufleet.gateway.request_body import fit_to_target
    from gpufleet.router import Target

    llama = Target(model="smol", upstream_model="smol", max_context=256, text_only=True, caps_max_tokens=True)
    image = chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]}])
    with pytest.raises(RequestError, match="model 'smol' does not take images"):
        fit_to_target("chat", image, llama)
    remote = Target(model="vl", upstream_model="vl")  # unknown: the upstream decides
    assert fit_to_target("chat", image, remote) is image
    asked = chat(max_tokens=32000, max_completion_tokens=100)
    capped = fit_to_target("chat", asked, llama)
    assert capped["max_tokens"] == 256 and capped["max_completion_tokens"] == 100
    assert asked["max_tokens"] == 32000  # the client's payload is not changed
    small = chat(max_tokens=10)
    assert fit_to_target("chat", small, llama) is small
    vllm = Target(model="big", upstream_model="big", max_context=2048)  # vLLM answers its own clear 400
    assert fit_to_target("chat", asked, vllm) is asked
