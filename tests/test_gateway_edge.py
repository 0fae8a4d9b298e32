"""The protocol edge (gateway/edge.py): a client protocol hands its request in the internal chat form to
`serve_chat_form` and gets its answers, stream chunks and errors back in its own shape.

The protocol here is a TOY, made for the test (chunks as `event: delta` lines, errors as {"type": "error"}):
what the Anthropic Messages and OpenAI Responses adapters build on. The upstream is the STAND-IN
tests/fault_upstream.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpufleet.config import parse_config
from gpufleet.errors import GpufleetError
from gpufleet.gateway import build_app, running
from gpufleet.gateway.edge import StreamEncoder, serve_chat_form
from gpufleet.gateway.relay import StreamRelayResponse
from tests.fault_upstream import FaultUpstream
from tests.gateway_harness import chat


class ToyEncoder:
    def __init__(self) -> None:
        self.chunks = 0

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        self.chunks += 1
        return b"event: delta\ndata: " + orjson.dumps(chunk) + b"\n\n"

    def text_piece(self, text: str) -> bytes | None:
        return None  # every chunk goes through `chunk`, counted

    def done(self) -> bytes:
        return b'event: stop\ndata: {"chunks": %d}\n\n' % self.chunks

    def error(self, body: dict[str, Any]) -> bytes:
        return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": body["error"]}) + b"\n\n"


class ToyProtocol:
    endpoint = "messages"

    def answer(self, data: dict[str, Any]) -> bytes:
        return orjson.dumps({"toy": data["choices"][0]["message"]["content"], "model": data["model"]})

    def stream_encoder(self) -> StreamEncoder | None:
        return ToyEncoder()

    def error_response(self, err: GpufleetError) -> Response:
        body = {"type": "error", "error": {"type": err.code, "message": err.message}}
        return Response(orjson.dumps(body), status_code=err.status_code, media_type="application/json")


async def toy_messages(request: Request) -> Response | StreamRelayResponse:
    body = orjson.loads(await request.body())  # the toy's body is already the chat form
    return await serve_chat_form(request, "chat", body, ToyProtocol())


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


@pytest.fixture
async def http(upstream: FaultUpstream) -> Any:
    upstream.reset()
    raw = {
        "server": {"api_keys": ["sk-right"]},
        "models": {"a": {"engine": "remote", "url": upstream.url, "upstream_model": "up"}},
    }
    app = build_app(parse_config(raw))
    app.router.routes.append(Route("/toy/messages", toy_messages, methods=["POST"]))
    async with running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as client:
            yield client


async def test_a_protocol_gets_its_own_answer_shape_and_metric_label(http: httpx.AsyncClient) -> None:
    response = await http.post("/toy/messages", json=chat("a"), headers={"x-api-key": "sk-right"})
    assert response.status_code == 200, response.text
    assert response.json() == {"toy": "hello from the stand-in", "model": "a"}
    assert response.headers["x-gpufleet-model"] == "a"
    metrics = (await http.get("/metrics", headers={"x-api-key": "sk-right"})).text
    assert 'gpufleet_requests_total{endpoint="messages",model="a",status="200"} 1.0' in metrics


async def test_a_protocol_encodes_each_stream_chunk_and_the_end(http: httpx.AsyncClient) -> None:
    response = await http.post("/toy/messages", json=chat("a", stream=True), headers={"x-api-key": "sk-right"})
    assert response.status_code == 200
    blocks = [b for b in response.text.split("\n\n") if b]
    assert all(b.startswith(("event: delta\n", "event: stop\n")) for b in blocks), blocks
    deltas = [orjson.loads(b.split("data: ", 1)[1]) for b in blocks if b.startswith("event: delta")]
    assert all(d["model"] == "a" for d in deltas)  # the served name, already set
    assert blocks[-1] == 'event: stop\ndata: {"chunks": ' + str(len(deltas)) + "}"
    assert "[DONE]" not in response.text


async def test_a_mid_stream_error_closes_the_stream_in_the_protocol_shape(
    http: httpx.AsyncClient, upstream: FaultUpstream
) -> None:
    upstream.reset("cut-chunked")
    response = await http.post("/toy/messages", json=chat("a", stream=True), headers={"x-api-key": "sk-right"})
    last = [b for b in response.text.split("\n\n") if b][-1]
    assert last.startswith("event: error\n")
    error = orjson.loads(last.split("data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["code"] == "upstream_stream_error"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "sk-wrong"},
        {"x-api-key": ""},
        {"x-api-key": "sk-right-but-longer"},
        {"authorization": "Bearer sk-wrong", "x-api-key": "sk-right"},  # a bad Authorization is not excused
        {"authorization": "Basic sk-right"},
    ],
)
async def test_without_a_right_key_the_protocol_gets_a_401_in_its_own_shape(
    http: httpx.AsyncClient, upstream: FaultUpstream, headers: dict[str, str]
) -> None:
    response = await http.post("/toy/messages", json=chat("a"), headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "invalid_api_key"
    assert upstream.requests == 0


@pytest.mark.parametrize("headers", [{"x-api-key": "sk-right"}, {"authorization": "Bearer sk-right"}])
async def test_openai_endpoints_take_either_key_header(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await http.post("/v1/chat/completions", json=chat("a"), headers=headers)
    assert response.status_code == 200, response.text


async def test_an_unknown_model_is_a_404_in_the_protocol_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/toy/messages", json=chat("nope"), headers={"x-api-key": "sk-right"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "model_not_found"
