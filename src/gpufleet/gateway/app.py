"""The gateway: one ASGI app (Starlette): the routes over the state (gateway/state.py) built from a Config.

app = build_app(load_config(None))          # serve with uvicorn, or drive with httpx.ASGITransport
async with running(app): ...                 # start/stop supervisor and upstream client (tests)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gpufleet.config import Config
from gpufleet.engines.base import Engine
from gpufleet.errors import GpufleetError
from gpufleet.gateway import (
    console_admin,
    messages_routes,
    openai_routes,
    ops_routes,
    persona_chat,
    responses_routes,
    ui,
    usage_routes,
)
from gpufleet.gateway.errors import error_body, error_response
from gpufleet.gateway.hot_routes import GatewayApp
from gpufleet.gateway.openapi import openapi_json
from gpufleet.gateway.origin_guard import OriginGuard, origin_middleware, policy_for
from gpufleet.gateway.state import Gateway, GatewayState

log = logging.getLogger("gpufleet.gateway")


def _json_error(status: int, message: str, code: str) -> Response:
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return Response(
        orjson.dumps(error_body(message, type_=type_, code=code)), status_code=status, media_type="application/json"
    )


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _json_error(404, f"no route {request.method} {request.url.path}; see /v1/models", "not_found")
    if exc.status_code == 405:
        return _json_error(405, f"method {request.method} not allowed on {request.url.path}", "method_not_allowed")
    return _json_error(exc.status_code, str(exc.detail), "http_error")


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, GpufleetError):
        return error_response(exc)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _json_error(500, f"internal error: {type(exc).__name__}; see the gateway log", "internal_error")


def build_app(
    config: Config,
    launches: Mapping[str, object] | None = None,
    *,
    engines: Mapping[str, Engine[Any, Any]] | None = None,
) -> Starlette:
    """The ASGI app for `config`; its lifespan starts and stops the engines. `launches`: the models' launches
    resolved up front (engines.resolve_launches, as `gpufleet serve` does); the others resolve at first start.
    `engines`: replaces engine kinds (tests: stand-ins)."""
    gateway = GatewayState(config, launches, engines=engines)
    exception_handlers: dict[Any, Any] = {HTTPException: _http_exception, Exception: _unexpected}
    app = GatewayApp(
        routes=_routes(),
        lifespan=_lifespan(gateway),
        exception_handlers=exception_handlers,
        middleware=origin_middleware(config.server),
    )  # cross-site writes refused (issue 20)
    app.state.gateway = gateway
    # The hot routes skip the stack (gateway/hot_routes.py), through the same origin guard.
    guard = None if config.server.cors_origins else OriginGuard(app.router, policy_for(config.server))
    app.configure_hot_routes(
        {
            "/v1/chat/completions": openai_routes.chat_completions,
            "/v1/completions": openai_routes.completions,
            "/v1/embeddings": openai_routes.embeddings,
            "/v1/messages": messages_routes.create_message,
            "/v1/messages/count_tokens": messages_routes.count_tokens,
            "/v1/responses": responses_routes.create_response,
        },
        guard,
        _unexpected,
    )
    return app


def _lifespan(gateway: GatewayState) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: start the gateway (supervisor, upstream client) and stop it at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    return lifespan


def _routes() -> list[BaseRoute]:
    """Every route of the gateway, the web console included."""
    return [
        Route("/v1/chat/completions", openai_routes.chat_completions, methods=["POST"]),
        Route("/v1/completions", openai_routes.completions, methods=["POST"]),
        Route("/v1/embeddings", openai_routes.embeddings, methods=["POST"]),
        Route("/v1/models", openai_routes.list_models, methods=["GET"]),
        Route("/v1/messages", messages_routes.create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages_routes.count_tokens, methods=["POST"]),
        Route("/v1/responses", responses_routes.create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses_routes.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses_routes.delete_response, methods=["DELETE"]),
        Route("/chat", persona_chat.persona_chat, methods=["POST"]),
        Route("/health", ops_routes.health, methods=["GET"]),
        Route("/health/ready", ops_routes.ready, methods=["GET"]),
        Route("/status", ops_routes.status, methods=["GET"]),
        Route("/metrics", ops_routes.metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/admin/models/{name}/stop", ops_routes.stop_model, methods=["POST"]),
        Route("/admin/models/{name}/start", ops_routes.start_model, methods=["POST"]),
        Route("/admin/models/{name}/swap", ops_routes.swap_model, methods=["POST"]),
        Route("/admin/models/{name}/logs", console_admin.engine_log, methods=["GET"]),
        Route("/admin/host", console_admin.host, methods=["GET"]),
        Route("/admin/usage", usage_routes.usage, methods=["GET"]),
        Route("/admin/keys", usage_routes.list_keys, methods=["GET"]),
        Route("/admin/keys", usage_routes.create_key, methods=["POST"]),
        Route("/admin/keys/{name}/revoke", usage_routes.revoke_key, methods=["POST"]),
        *ui.routes(),  # the web console at /ui
    ]


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Gateway]:
    """Run the app's startup/shutdown around a block (for in-process use with httpx.ASGITransport)."""
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()
