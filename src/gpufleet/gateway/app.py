"""The gateway: one ASGI app (Starlette) that ties config, router, supervisor and relay together.

    app = build_app(load_config(None))          # serve with uvicorn, or drive with httpx.ASGITransport
    async with running(app): ...                 # start/stop supervisor and upstream client (tests)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpufleet.config import AutoModelClassifier, Config, LlamaCppModel, TransformersModel, VllmModel
from gpufleet.engines import MANAGED_ENGINES
from gpufleet.errors import GpufleetError
from gpufleet.gateway import (
    messages_routes,
    openai_routes,
    ops_routes,
    persona_chat,
    responses_routes,
    ui,
    usage_routes,
)
from gpufleet.gateway.admission import Admission
from gpufleet.gateway.auth import KeyCheck, exposure_warning
from gpufleet.gateway.auto_classifier import ModelTierClassifier
from gpufleet.gateway.dialect_binding import dialect_for, dialect_warning
from gpufleet.gateway.errors import error_body
from gpufleet.gateway.openapi import openapi_json
from gpufleet.gateway.origin_guard import origin_middleware
from gpufleet.gateway.relay import LiveStreams, UpstreamClient
from gpufleet.metrics import GatewayMetrics
from gpufleet.router import ModelTable, Target
from gpufleet.router.health import HealthBoard
from gpufleet.router.metrics import RouterMetrics
from gpufleet.router.select import TargetSelector
from gpufleet.store import KeyDirectory
from gpufleet.supervisor import EngineState, Supervisor

log = logging.getLogger("gpufleet.gateway")


class Gateway:
    """Everything a request handler needs, built from one Config."""

    def __init__(self, config: Config, launches: Mapping[str, object] | None = None) -> None:
        self.config = config
        managed: dict[str, LlamaCppModel | VllmModel | TransformersModel] = {
            name: model for name, model in config.models.items()
            if model.engine in MANAGED_ENGINES and isinstance(model, LlamaCppModel | VllmModel | TransformersModel)
        }
        self.supervisor = Supervisor(managed, queue_timeout_s=config.server.queue_timeout_s,
                                     swap_groups=config.swap_groups, resolved=launches)
        self.dialects = {name: dialect_for(name, model) for name, model in config.models.items()}
        self.dialect_warnings = {name: warning for name, model in config.models.items()
                                 if (warning := dialect_warning(name, model)) is not None}
        for warning in self.dialect_warnings.values():
            log.warning("%s", warning)
        self.table = ModelTable(config, self.dialects)
        directory = KeyDirectory()  # team keys, loaded from the store by `admission`
        self.keys = KeyCheck.for_server(config.server, directory)
        if (warning := exposure_warning(config.server)) is not None:
            log.warning("SECURITY: %s", warning)
        self.client = UpstreamClient(read_timeout_s=config.server.request_timeout_s)
        self.metrics = GatewayMetrics(self.supervisor.status)
        self.admission = Admission(config.server, directory, self.metrics.registry)
        self.router = HealthBoard(self.table.targets, config.router, on_cooldown=self._on_cooldown)
        self.router_metrics = RouterMetrics(self.metrics.registry, self.router.snapshot)
        self.selector = TargetSelector(self.router, load_of=self._engine_queue)
        self.streams = LiveStreams()  # ended with an error event when a shutdown's grace runs out
        auto = config.router.auto
        self.auto_model: ModelTierClassifier | None = None  # `router.auto.classifier: {kind: knn|judge}`
        if auto is not None and isinstance(auto.classifier, AutoModelClassifier):
            assert self.table.classifier is not None
            self.auto_model = ModelTierClassifier(self, auto.classifier, self.table.classifier)

    def _engine_queue(self, target: Target) -> float:
        """The engine's own waiting queue at its last scrape (vLLM num_requests_waiting); 0 when not scraped."""
        slot = self.supervisor.slots.get(target.model)
        metrics = slot.engine_metrics if slot is not None and slot.state == EngineState.READY else None
        return float(metrics.requests_waiting) if metrics is not None else 0.0

    def _on_cooldown(self, target: Target) -> None:
        self.router_metrics.observe_cooldown(target.model)

    async def startup(self) -> None:
        await self.admission.start()  # team keys are known before the first request
        await self.client.start()
        await self.supervisor.start()
        self.router.start_probing(self.client.probe)
        if self.auto_model is not None:
            self.auto_model.start()

    async def shutdown(self) -> None:
        if self.auto_model is not None:
            await self.auto_model.stop()
        await self.router.stop_probing()
        await self.supervisor.close()
        await self.client.close()
        await self.admission.close()  # after the last request: every answered row is written


def _json_error(status: int, message: str, code: str) -> Response:
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return Response(orjson.dumps(error_body(message, type_=type_, code=code)), status_code=status,
                    media_type="application/json")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _json_error(404, f"no route {request.method} {request.url.path}; see /v1/models", "not_found")
    if exc.status_code == 405:
        return _json_error(405, f"method {request.method} not allowed on {request.url.path}", "method_not_allowed")
    return _json_error(exc.status_code, str(exc.detail), "http_error")


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, GpufleetError):
        from gpufleet.gateway.errors import error_response

        return error_response(exc)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _json_error(500, f"internal error: {type(exc).__name__}; see the gateway log", "internal_error")


def build_app(config: Config, launches: Mapping[str, object] | None = None) -> Starlette:
    """The ASGI app for `config`; its lifespan starts and stops the engines. `launches`: the models' launches
    resolved up front (engines.resolve_launches, as `gpufleet serve` does); the others resolve at first start."""
    gateway = Gateway(config, launches)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.startup()
        try:
            yield
        finally:
            await gateway.shutdown()

    routes = [
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
        Route("/admin/usage", usage_routes.usage, methods=["GET"]),
        Route("/admin/keys", usage_routes.list_keys, methods=["GET"]),
        Route("/admin/keys", usage_routes.create_key, methods=["POST"]),
        Route("/admin/keys/{name}/revoke", usage_routes.revoke_key, methods=["POST"]),
        *ui.routes(),  # the web console at /ui
    ]
    exception_handlers: dict[Any, Any] = {HTTPException: _http_exception, Exception: _unexpected}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=exception_handlers,
                    middleware=origin_middleware(config.server))  # cross-site writes refused (issue 20)
    app.state.gateway = gateway
    return app


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Gateway]:
    """Run the app's startup/shutdown around a block (for in-process use with httpx.ASGITransport)."""
    gateway: Gateway = app.state.gateway
    await gateway.startup()
    try:
        yield gateway
    finally:
        await gateway.shutdown()
