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

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import EngineNotReady, GpufleetError
from gpufleet.gateway.admission import Ticket
from gpufleet.gateway.asgi_headers import scope_header
from gpufleet.gateway.auth import Principal, presented_key_in_scope
from gpufleet.gateway.client_protocol import OPENAI, ClientProtocol, Kind, OpenAIProtocol, OpenAISSE, StreamEncoder
from gpufleet.gateway.client_watch import Ending, serve_watching_client
from gpufleet.gateway.pipeline import JsonReply, Pipeline
from gpufleet.gateway.protocol import validate_request
from gpufleet.gateway.relay import StreamRelayResponse
from gpufleet.gateway.state import GatewayState, state_of
from gpufleet.router.select import session_key
from gpufleet.router.table import Route

_PRINCIPAL = "gpufleet.principal"  # scope key: who this request is, once its key was checked


def authorize(request: Request) -> Principal:
    """Who sent the request; AuthError (401) unless it carries a configured key (a static admin key or a live
    team key), as `Authorization: Bearer <key>` or as `x-api-key: <key>` (Anthropic's header); constant-time
    comparison. Checked once per request."""
    principal: Principal | None = request.scope.get(_PRINCIPAL)
    if principal is None:
        principal = state_of(request).keys.check(presented_key_in_scope(request.scope))
        request.scope[_PRINCIPAL] = principal
    return principal


async def resolve_route(state: GatewayState, payload: dict[str, Any]) -> Route:
    """The route for the payload's `model`: a name, alias, route, persona, or `auto` (its classifier's tier)."""
    if state.auto_model is not None and payload["model"] == "auto":
        route = await state.auto_model.route(payload)  # a model classifier; the rules when it cannot
    else:
        route = state.table.resolve(payload["model"], payload)
    if route.tier is not None:
        state.router_metrics.observe_tier(route.tier)
    return route


async def serve_chat_form(
    request: Request, kind: Kind, payload: dict[str, Any], protocol: ClientProtocol
) -> Response | StreamRelayResponse:
    """Serve a request already in the internal form; the answer (or error) in `protocol`'s shape."""
    state = state_of(request)
    started = time.perf_counter()
    served = _Serving()
    try:
        principal = authorize(request)
        validate_request(kind, payload)
        # Routing runs inside the watched work: a client that leaves also cancels an `auto` classifier's call.
        work = _route_and_serve(state, request, principal, kind, payload, protocol, started, served)
        answer = await serve_watching_client(request, work, state.streams)
        if answer is Ending.CLIENT_LEFT:
            state.metrics.observe_error(served.model, "client_disconnected")
            state.metrics.observe_request(served.model, protocol.endpoint, 499, time.perf_counter() - started)
            served.close(499)
            return Response(status_code=499)
        if answer is Ending.CANCELLED:
            raise shutting_down(state.streams.shutting_down)
        if not isinstance(answer, StreamRelayResponse):
            served.close(answer.status_code)  # a stream's ticket closes when the stream ends
        return answer
    except GpufleetError as err:
        served.close(err.status_code)
        state.metrics.observe_error(served.model, err.code)
        state.metrics.observe_request(served.model, protocol.endpoint, err.status_code, time.perf_counter() - started)
        return protocol.error_response(err)
    except BaseException:
        served.close(500)  # a bug or a forced shutdown: the key's concurrency slot must not leak
        raise


class _Serving:
    """What the edge learns while the work runs: the model label and the key's admission ticket."""

    __slots__ = ("model", "ticket")

    def __init__(self) -> None:
        self.model = "unknown"  # never the raw requested name as a label: unbounded cardinality
        self.ticket: Ticket | None = None

    def close(self, status: int) -> None:
        if self.ticket is not None:
            self.ticket.close(status)


async def _route_and_serve(
    state: GatewayState,
    request: Request,
    principal: Principal,
    kind: Kind,
    payload: dict[str, Any],
    protocol: ClientProtocol,
    started: float,
    served: _Serving,
) -> Response | StreamRelayResponse:
    route = await resolve_route(state, payload)
    served.model = route.primary.model
    # A team key's models, limits and ledger row: 403 / 429 before anything is sent upstream.
    served.ticket = state.admission.admit(principal, payload["model"], (route.name, served.model), protocol.endpoint)
    session = session_key(scope_header(request.scope, b"x-gpufleet-session"), payload) if route.affinity else None
    return await state.pipeline.serve(
        kind, payload, route, protocol, started=started, session=session, ticket=served.ticket
    )


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
    "OPENAI",
    "ClientProtocol",
    "JsonReply",
    "Kind",
    "OpenAIProtocol",
    "OpenAISSE",
    "Pipeline",
    "StreamEncoder",
    "authenticate",
    "authorize",
    "gateway_of",
    "resolve_route",
    "serve_chat_form",
    "state_of",
    "with_headers",
]
