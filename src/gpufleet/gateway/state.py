"""The gateway's state: every long-lived part, built once from one Config and wired together.

    state = GatewayState(config)         # no I/O yet; `engines=` replaces engine kinds (tests: stand-ins)
    await state.startup(); ...; await state.shutdown()

Handlers reach it through `state_of(request)`; the parts they use are plain attributes. Nothing here
imports a handler module, so the request path has no import circle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from gpufleet.config import AutoModelClassifier, Config, LlamaCppModel, TransformersModel, VllmModel
from gpufleet.engine_supervisor import EngineState, Supervisor
from gpufleet.engines import MANAGED_ENGINES
from gpufleet.engines.base import Engine
from gpufleet.gateway.admission import Admission
from gpufleet.gateway.auth import KeyCheck, exposure_warning
from gpufleet.gateway.auto_classifier import ModelTierClassifier
from gpufleet.gateway.dialect_binding import dialect_for, dialect_warning
from gpufleet.gateway.forward import Forwarder, ForwardLimits
from gpufleet.gateway.pipeline import Pipeline
from gpufleet.gateway.relay import LiveStreams, UpstreamClient
from gpufleet.metrics import GatewayMetrics
from gpufleet.router import ModelTable, Target
from gpufleet.router.fallback import FallbackPolicy
from gpufleet.router.health import HealthBoard
from gpufleet.router.metrics import RouterMetrics
from gpufleet.router.select import TargetSelector
from gpufleet.store import KeyDirectory

log = logging.getLogger("gpufleet.gateway")


class GatewayState:
    """Everything a request handler needs, built from one Config."""

    def __init__(
        self,
        config: Config,
        launches: Mapping[str, object] | None = None,
        *,
        engines: Mapping[str, Engine[Any, Any]] | None = None,
    ) -> None:
        self.config = config
        managed: dict[str, LlamaCppModel | VllmModel | TransformersModel] = {
            name: model
            for name, model in config.models.items()
            if model.engine in MANAGED_ENGINES and isinstance(model, LlamaCppModel | VllmModel | TransformersModel)
        }
        self.supervisor = Supervisor(
            managed,
            queue_timeout_s=config.server.queue_timeout_s,
            swap_groups=config.swap_groups,
            resolved=launches,
            engines=engines,
        )
        self.dialects = {name: dialect_for(name, model) for name, model in config.models.items()}
        self.dialect_warnings = {
            name: warning
            for name, model in config.models.items()
            if (warning := dialect_warning(name, model)) is not None
        }
        for warning in self.dialect_warnings.values():
            log.warning("%s", warning)
        self.table = ModelTable(config, self.dialects)
        directory = KeyDirectory()  # team keys, loaded from the store by `admission`
        self.keys = KeyCheck.for_server(config.server, directory)
        if (warning := exposure_warning(config.server)) is not None:
            log.warning("SECURITY: %s", warning)
        self.client = UpstreamClient(read_timeout_s=config.server.request_timeout_s)
        self.metrics = GatewayMetrics(self.supervisor.status)
        self.admission = Admission(config.server, directory, self.metrics.registry)  # team keys, limits, ledger
        self.router = HealthBoard(self.table.targets, config.router, on_cooldown=self._on_cooldown)
        self.router_metrics = RouterMetrics(self.metrics.registry, self.router.snapshot)
        self.selector = TargetSelector(self.router, load_of=self._engine_queue)
        self.streams = LiveStreams()  # ended with an error event (or 503) when a shutdown's grace runs out
        self.pipeline = self._build_pipeline(config, managed)
        self.auto_model = self._build_auto_model(config)  # `router.auto.classifier: {kind: knn|judge}`

    def _build_pipeline(
        self, config: Config, managed: dict[str, LlamaCppModel | VllmModel | TransformersModel]
    ) -> Pipeline:
        server, router = config.server, config.router
        limits = ForwardLimits(
            first_byte_timeout_s=router.first_byte_timeout_s,
            max_upstream_body_bytes=server.max_upstream_body_bytes,
            max_upstream_event_bytes=server.max_upstream_event_bytes,
        )
        forwarder = Forwarder(
            self.client,
            self.supervisor,
            limits,
            ready_timeout_s={name: model.ready_timeout_s for name, model in managed.items()},
        )
        policy = FallbackPolicy(
            max_attempts=router.max_attempts,
            retry_after_sent=router.retry_after_sent,
            retry_backoff_s=router.retry_backoff_s,
            max_resumes=router.max_resumes,
            stream_stall_timeout_s=router.stream_stall_timeout_s,
        )
        return Pipeline(
            forwarder=forwarder,
            table=self.table,
            selector=self.selector,
            board=self.router,
            router_metrics=self.router_metrics,
            metrics=self.metrics,
            streams=self.streams,
            policy=policy,
        )

    def _build_auto_model(self, config: Config) -> ModelTierClassifier | None:
        auto = config.router.auto
        if auto is None or not isinstance(auto.classifier, AutoModelClassifier):
            return None
        assert self.table.classifier is not None
        return ModelTierClassifier(
            auto.classifier,
            self.table.classifier,
            call=self.pipeline.call,
            table=self.table,
            metrics=self.router_metrics,
            cooldown_s=config.router.cooldown_s,
            models=config.models,
        )

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


Gateway = GatewayState  # the name tests and benchmarks know


def state_of(request: Request) -> GatewayState:
    """The gateway state of the app serving `request`."""
    state: GatewayState = request.app.state.gateway
    return state
