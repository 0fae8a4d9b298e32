"""The edge contract between client protocols and the chat-form pipeline.

A protocol route translates its body into a chat-completions payload, then calls
`serve_chat_form(request, "chat", payload, protocol)`: auth (Bearer or x-api-key), routing, fallback, relay and
the dialect all happen in chat form; `protocol` turns the answer (a whole chat.completion, or each
chat.completion.chunk of a stream) and any error back into its own shapes.

NOTE for the merge: the pipeline redesign provides this module too (same Protocol classes and entry point);
this version adapts the current openai_routes machinery and re-encodes the relayed SSE events.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import GpufleetError, RequestError
from gpufleet.gateway.openai_routes import Answer, _finished_before_disconnect, serve_route
from gpufleet.gateway.protocol import validate_request
from gpufleet.gateway.relay import StreamRelayResponse
from gpufleet.router.select import session_key

if TYPE_CHECKING:
    from gpufleet.gateway.admission import Ticket
    from gpufleet.gateway.app import Gateway
    from gpufleet.gateway.auth import Principal

_PRINCIPAL = "gpufleet.principal"  # scope key: who this request is, once its key was checked


class StreamEncoder(Protocol):
    def chunk(self, chunk: dict[str, Any]) -> bytes: ...  # one chat.completion.chunk after the dialect
    def done(self) -> bytes: ...  # the upstream finished normally
    def error(self, body: dict[str, Any]) -> bytes: ...  # OpenAI error body {"error": {...}} mid-stream


class ClientProtocol(Protocol):
    endpoint: str  # metrics label: "messages", "responses"

    def answer(self, data: dict[str, Any]) -> bytes: ...  # whole chat.completion dict (after dialect) -> body
    def stream_encoder(self) -> StreamEncoder | None: ...
    def error_response(self, err: GpufleetError) -> Response: ...


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def authenticate(request: Request) -> Principal:
    """Who sent the request; AuthError (401) unless it carries a configured key: `Authorization: Bearer` or
    `x-api-key`. Checked once per request."""
    principal: Principal | None = request.scope.get(_PRINCIPAL)
    if principal is not None:
        return principal
    authorization = request.headers.get("authorization")
    if authorization is None and (api_key := request.headers.get("x-api-key")) is not None:
        authorization = f"Bearer {api_key}"  # Anthropic clients send their key here
    principal = gateway_of(request).keys.check(authorization)
    request.scope[_PRINCIPAL] = principal
    return principal


async def serve_chat_form(request: Request, kind: str, payload: dict[str, Any], protocol: ClientProtocol) -> Any:
    """Serve a chat-form payload for a client that speaks `protocol`; its errors come back in its shape."""
    gateway = gateway_of(request)
    started = time.perf_counter()
    model = "unknown"
    ticket: Ticket | None = None
    try:
        principal = authenticate(request)
        if kind != "chat":
            raise RequestError(f"the {protocol.endpoint} endpoint serves chat-form requests only")
        validate_request("chat", payload)
        if gateway.auto_model is not None and payload["model"] == "auto":
            route = await gateway.auto_model.route(payload)
        else:
            route = gateway.table.resolve(payload["model"], payload)
        model = route.primary.model
        ticket = gateway.admission.admit(principal, payload["model"], (route.name, model), protocol.endpoint)
        if route.tier is not None:
            gateway.router_metrics.observe_tier(route.tier)
        session = session_key(request.headers.get("x-gpufleet-session"), payload) if route.affinity else None
        work = asyncio.ensure_future(serve_route(gateway, "chat", payload, route, started, session=session,
                                                 ticket=ticket))
        if not await _finished_before_disconnect(request, work):
            gateway.metrics.observe_error(model, "client_disconnected")
            gateway.metrics.observe_request(model, protocol.endpoint, 499, time.perf_counter() - started)
            ticket.close(499)
            return Response(status_code=499)
        answer = work.result()
        if not isinstance(answer, StreamRelayResponse):
            ticket.close(answer.status_code)  # a stream's ticket closes when the stream ends
        return _encode(answer, protocol)
    except GpufleetError as err:
        if ticket is not None:
            ticket.close(err.status_code)
        gateway.metrics.observe_error(model, err.code)
        gateway.metrics.observe_request(model, protocol.endpoint, err.status_code, time.perf_counter() - started)
        return protocol.error_response(err)
    except BaseException:
        if ticket is not None:
            ticket.close(500)  # a bug or a forced shutdown: the key's concurrency slot must not leak
        raise


def _encode(answer: Answer, protocol: ClientProtocol) -> Any:
    if isinstance(answer, StreamRelayResponse):
        encoder = protocol.stream_encoder()
        assert encoder is not None, "a stream was relayed for a protocol without a stream encoder"
        return EncodedStream(answer, encoder)
    if answer.status_code != 200:
        return answer
    encoded = Response(protocol.answer(orjson.loads(answer.body)), media_type="application/json")
    # The routing headers (x-gpufleet-model, -target, -route...) as they are: raw, no Headers object per request.
    encoded.raw_headers.extend(h for h in answer.raw_headers if h[0] not in (b"content-length", b"content-type"))
    return encoded


class EncodedStream:
    """An ASGI app around the relayed chat SSE stream that re-encodes each event in the client's protocol."""

    def __init__(self, relay: StreamRelayResponse, encoder: StreamEncoder) -> None:
        self.relay = relay
        self.encoder = encoder
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self._pending = b""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def encoded_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], *self.extra_headers]}
            elif message["type"] == "http.response.body":
                message = {**message, "body": self.feed(message.get("body", b""))}
            await send(message)

        await self.relay(scope, receive, encoded_send)

    def feed(self, data: bytes) -> bytes:
        """Relayed `data: {chunk}` / `data: [DONE]` events in; the protocol's events out."""
        buffer = self._pending + data
        out: list[bytes] = []
        while (end := buffer.find(b"\n\n")) >= 0:
            line, buffer = buffer[:end], buffer[end + 2:]
            if not line.startswith(b"data: "):
                continue
            payload = line[6:]
            if payload == b"[DONE]":
                out.append(self.encoder.done())
                continue
            chunk = orjson.loads(payload)
            out.append(self.encoder.error(chunk) if "error" in chunk else self.encoder.chunk(chunk))
        self._pending = buffer
        return b"".join(out)


def with_headers(answer: Any, headers: dict[str, str]) -> Any:
    """Add headers to what serve_chat_form returned (a Response or an encoded stream)."""
    if not headers:
        return answer
    if isinstance(answer, EncodedStream):
        answer.extra_headers.extend((k.encode(), v.encode()) for k, v in headers.items())
    elif isinstance(answer, Response):
        answer.headers.update(headers)
    return answer
