"""The protocol edge: where a client protocol hands its request, in the internal chat form, to the pipeline.

A handler for any protocol (OpenAI chat/completions/embeddings, Anthropic Messages, OpenAI Responses, /chat)
parses and translates its body into the internal form (an OpenAI chat/completions/embeddings body), then:

    return await serve_chat_form(request, "chat", payload, protocol)

`serve_chat_form` does everything between: auth (`Authorization: Bearer <key>` or `x-api-key: <key>`,
compared in constant time), route resolution (aliases, routes, personas and their defaults, `auto`), the
fallback loop, the relay and its dialect, metrics labelled `protocol.endpoint`, and errors in the protocol's
own shape (`protocol.error_response`). `protocol` (see `ClientProtocol`) turns the internal form's answer,
stream chunks and mid-stream errors into the client's bytes; `OPENAI[kind]` is the identity, whose streams
take the relay's fast path.

Handlers that must check the key before reading a body call `authorize(request)` first (the check is then
not repeated). Non-stream callers inside the gateway (the `auto` classifier, /chat) use the internal call
API, which returns the chat answer as a dict: `state_of(request).pipeline.call(kind, body)`, or
`.reply(...)` for the answer with its x-gpufleet-* headers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import EngineNotReady, GpufleetError
from gpufleet.gateway.auth import presented_key
from gpufleet.gateway.client_protocol import OPENAI, ClientProtocol, Kind, OpenAIProtocol, OpenAISSE, StreamEncoder
from gpufleet.gateway.client_watch import Ending, wait_watching_client
from gpufleet.gateway.pipeline import JsonReply, Pipeline
from gpufleet.gateway.protocol import validate_request
from gpufleet.gateway.relay import StreamRelayResponse
from gpufleet.gateway.state import GatewayState, state_of
from gpufleet.router.select import session_key
from gpufleet.router.table import Route

_AUTHORIZED = "gpufleet.authorized"  # scope key: this request's key was checked


def authorize(request: Request) -> None:
    """AuthError (401) unless the request carries a configured key, as `Authorization: Bearer <key>` or as
    `x-api-key: <key>` (Anthropic's header); constant-time comparison. Checked once per request."""
    scope = request.scope
    if scope.get(_AUTHORIZED):
        return
    state_of(request).keys.check(presented_key(request.headers))
    scope[_AUTHORIZED] = True


async def resolve_route(state: GatewayState, payload: dict[str, Any]) -> Route:
    """The route for the payload's `model`: a name, alias, route, persona, or `auto` (its classifier's tier)."""
    if state.auto_model is not None and payload["model"] == "auto":
        route = await state.auto_model.route(payload)  # a model classifier; the rules when it cannot
    else:
        route = state.table.resolve(payload["model"], payload)
    if route.tier is not None:
        state.router_metrics.observe_tier(route.tier)
    return route


async def serve_chat_form(request: Request, kind: Kind, payload: dict[str, Any],
                          protocol: ClientProtocol) -> Response | StreamRelayResponse:
    """Serve a request already in the internal form; the answer (or error) in `protocol`'s shape."""
    state = state_of(request)
    started = time.perf_counter()
    labels = {"model": "unknown"}  # never the raw requested name as a label: unbounded cardinality
    try:
        authorize(request)
        validate_request(kind, payload)
        # Routing runs inside the watched work: a client that leaves also cancels an `auto` classifier's call.
        work = asyncio.ensure_future(_route_and_serve(state, request, kind, payload, protocol, started, labels))
        state.streams.add_waiting(work)
        ending = await wait_watching_client(request, work)
        if ending is Ending.CLIENT_LEFT:
            state.metrics.observe_error(labels["model"], "client_disconnected")
            state.metrics.observe_request(labels["model"], protocol.endpoint, 499, time.perf_counter() - started)
            return Response(status_code=499)
        if ending is Ending.CANCELLED:
            raise shutting_down(state.streams.shutting_down)
        return work.result()
    except GpufleetError as err:
        state.metrics.observe_error(labels["model"], err.code)
        state.metrics.observe_request(labels["model"], protocol.endpoint, err.status_code,
                                      time.perf_counter() - started)
        return protocol.error_response(err)


async def _route_and_serve(state: GatewayState, request: Request, kind: Kind, payload: dict[str, Any],
                           protocol: ClientProtocol, started: float,
                           labels: dict[str, str]) -> Response | StreamRelayResponse:
    route = await resolve_route(state, payload)
    labels["model"] = route.primary.model
    session = session_key(request.headers.get("x-gpufleet-session"), payload) if route.affinity else None
    return await state.pipeline.serve(kind, payload, route, protocol, started=started, session=session)


def with_headers(answer: Response | StreamRelayResponse, headers: dict[str, str]) -> Response | StreamRelayResponse:
    """`answer` (what serve_chat_form returned) with more response headers (e.g. x-gpufleet-dropped)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if isinstance(answer, StreamRelayResponse):
        answer.headers = [*answer.headers, *raw]
    else:
        answer.raw_headers.extend(raw)  # raw: no Headers object per request
    return answer


authenticate = authorize  # the names the first agent endpoints were written against
gateway_of = state_of


def shutting_down(reason: str | None) -> EngineNotReady:
    """503 for a request that had nothing sent yet when the shutdown's grace ran out."""
    err = EngineNotReady(reason or "the gateway is shutting down", retry_after_s=5)
    err.code = "gateway_shutting_down"
    return err


__all__ = [
    "OPENAI", "ClientProtocol", "JsonReply", "Kind", "OpenAIProtocol", "OpenAISSE", "Pipeline", "StreamEncoder",
    "authenticate", "authorize", "gateway_of", "resolve_route", "serve_chat_form", "state_of", "with_headers",
]
