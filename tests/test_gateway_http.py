"""Every gateway error path and the relay's rewriting, through the ASGI app in-process.

Upstream here is the STAND-IN server from standin_upstream.py; the real engines are tested in
test_embedded_engine.py (llama.cpp) and the vLLM tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from tests.real_engines import smollm2_model
from tests.standin_upstream import StandInUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


@pytest.fixture
async def client(upstream: StandInUpstream) -> AsyncIterator[httpx.AsyncClient]:
    upstream.behaviour = "ok"
    config = parse_config(
        {
            "server": {"max_body_bytes": 2000, "queue_timeout_s": 0},
            "models": {
                "echo": {
                    "engine": "remote",
                    "url": upstream.url,
                    "upstream_model": "Qwen/Qwen3-8B-AWQ",
                    "api_key": "sk-upstream",
                    "aliases": ["gpt-4o"],
                },
                "down": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
                "cold": smollm2_model(preload=False),
            },
        }
    )
    app = build_app(config)
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            yield http


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": "hi"}], **extra}


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    return dict(error)


async def test_malformed_json_returns_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    error = assert_openai_error(response, 400)
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "echo"}, "messages"),
        ({"model": "echo", "messages": []}, "messages"),
        (chat(max_tokens=-1), "max_tokens"),
        (chat(stream="yes"), "stream"),
        (chat(temperature=7), "temperature"),
        ({"model": "echo", "messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
async def test_schema_violation_returns_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    error = assert_openai_error(await client.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param
    assert param in error["message"]


async def test_body_that_is_not_an_object_returns_400(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.post("/v1/chat/completions", json=[1, 2]), 400)


async def test_unknown_model_returns_404_listing_available_models(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await client.post("/v1/chat/completions", json=chat(model="qwen3-32b")), 404)
    assert "'qwen3-32b'" in error["message"]
    for name in ("echo", "gpt-4o", "cold"):
        assert name in error["message"]
    assert error["code"] == "model_not_found"


async def test_body_over_the_limit_returns_413(client: httpx.AsyncClient) -> None:
    big = chat(messages=[{"role": "user", "content": "x" * 5000}])
    error = assert_openai_error(await client.post("/v1/chat/completions", json=big), 413)
    assert "max_body_bytes" in error["message"]


async def test_engine_not_ready_returns_503_with_retry_after(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(model="cold"))
    assert_openai_error(response, 503)
    assert int(response.headers["retry-after"]) >= 1


async def test_unreachable_upstream_returns_502(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await client.post("/v1/chat/completions", json=chat(model="down")), 502)
    assert "127.0.0.1:9" in error["message"]


async def test_upstream_client_error_keeps_status_and_message(
    client: httpx.AsyncClient, upstream: StandInUpstream
) -> None:
    upstream.behaviour = "400"
    error = assert_openai_error(await client.post("/v1/chat/completions", json=chat()), 400)
    assert error["message"] == "max_tokens is too large"
    assert error["param"] == "max_tokens"


async def test_upstream_server_error_becomes_502(client: httpx.AsyncClient, upstream: StandInUpstream) -> None:
    upstream.behaviour = "500"
    error = assert_openai_error(await client.post("/v1/chat/completions", json=chat()), 502)
    assert "HTTP 500" in error["message"]


async def test_upstream_answer_that_is_not_json_becomes_502(
    client: httpx.AsyncClient, upstream: StandInUpstream
) -> None:
    upstream.behaviour = "not-json"
    assert_openai_error(await client.post("/v1/chat/completions", json=chat()), 502)


async def test_unknown_route_and_wrong_method_are_openai_errors(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nope"), 404)
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


async def test_alias_reaches_upstream_under_its_expected_name_and_fields_survive(
    client: httpx.AsyncClient, upstream: StandInUpstream
) -> None:
    body = chat(model="gpt-4o", chat_template_kwargs={"enable_thinking": False}, top_k=20)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["model"] == "echo"  # the served name, not the upstream's meaningless one
    assert response.headers["x-gpufleet-target"].startswith("remote:")
    sent = upstream.received[-1]
    assert sent["model"] == "Qwen/Qwen3-8B-AWQ"
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert sent["top_k"] == 20
    assert upstream.headers[-1]["authorization"] == "Bearer sk-upstream"


def sse_events(text: str) -> list[Any]:
    events = []
    for block in text.strip().split("\n\n"):
        payload = block.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


async def test_stream_is_relayed_with_served_model_and_no_usage_unless_asked(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["model"] == "echo" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "tok0 tok1 tok2 tok3 tok4 "
    assert not any("usage" in c for c in chunks)


async def test_stream_keeps_usage_when_client_asks(client: httpx.AsyncClient) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    events = sse_events((await client.post("/v1/chat/completions", json=body)).text)
    assert events[-2]["usage"]["completion_tokens"] == 5
    assert events[-2]["choices"] == []


async def test_upstream_dying_mid_stream_ends_with_an_error_event(
    client: httpx.AsyncClient, upstream: StandInUpstream
) -> None:
    upstream.behaviour = "die-mid-stream"
    response = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert response.status_code == 200  # bytes were already sent: no silent switch, an error event instead
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "upstream_stream_error"


async def test_models_lists_models_and_marks_aliases(client: httpx.AsyncClient) -> None:
    data = (await client.get("/v1/models")).json()["data"]
    by_id = {m["id"]: m for m in data}
    assert by_id["gpt-4o"]["alias_of"] == "echo"
    assert "alias_of" not in by_id["echo"]


async def test_metrics_count_requests_and_errors_by_model(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat())
    await client.post("/v1/chat/completions", json=chat(model="nope"))
    text = (await client.get("/metrics")).text
    assert 'gpufleet_requests_total{endpoint="chat",model="echo",status="200"}' in text
    assert 'gpufleet_errors_total{code="model_not_found",model="unknown"}' in text
    assert 'gpufleet_completion_tokens_total{model="echo"}' in text
    assert "gpufleet_request_duration_seconds_bucket" in text


async def test_api_keys_are_required_when_configured(upstream: StandInUpstream) -> None:
    config = parse_config(
        {"server": {"api_keys": ["k1", "k2"]}, "models": {"echo": {"engine": "remote", "url": upstream.url}}}
    )
    app = build_app(config)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        assert_openai_error(await http.post("/v1/chat/completions", json=chat()), 401)
        bad = await http.post("/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer nope"})
        assert assert_openai_error(bad, 401)["code"] == "invalid_api_key"
        good = await http.post("/v1/chat/completions", json=chat(), headers={"Authorization": "Bearer k2"})
        assert good.status_code == 200
        assert (await http.get("/health")).status_code == 200  # liveness stays open for probes
