"""One managed model's slot: its state, its process and the JSON view /status shows."""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from typing import Any

from gpufleet.engine_supervisor.process import EngineProcess
from gpufleet.engines import ManagedModel
from gpufleet.engines.base import LaunchSpec
from gpufleet.engines.vllm_log import VllmStartupLog
from gpufleet.engines.vllm_metrics import VllmMetrics

__all__ = ["EngineSlot", "EngineState", "ManagedModel", "Upstream"]


class EngineState(enum.StrEnum):
    """Lifecycle states of a managed engine."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"
    SLEEPING = "sleeping"  # vLLM sleep level 1: process alive, weights in host RAM, GPU memory free


@dataclass(frozen=True)
class Upstream:
    """Where a ready engine accepts OpenAI requests."""

    base_url: str
    api_key: str | None = None


class EngineSlot:
    """One managed model: its config, its current process (if any) and its state."""

    def __init__(self, name: str, model: ManagedModel) -> None:
        self.name = name
        self.model = model
        self.state = EngineState.STOPPED
        self.process: EngineProcess | None = None
        self.spec: LaunchSpec | None = None
        # The engine's resolve() of this model, made once (by `gpufleet serve`, else at the first start) and
        # reused by every restart and swap-in; None until then, and again after resolving failed.
        self.resolved: object | None = None
        self.phase = ""
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.ready_at = 0.0
        self.failures = 0
        self.restarts = 0
        self.last_error = ""
        self.retry_at = 0.0
        # Resolves when the current bring-up ends: result on ready, EngineError on failure.
        self.episode: asyncio.Future[None] | None = None
        self.stop_requested = False
        # Bumped by every start and stop: a start task that finds it changed was superseded (a stop came in
        # while it prepared or spawned) and must not leave a process behind (issue 20: orphans after a burst).
        self.generation = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.startup_log: VllmStartupLog | None = None
        self.engine_metrics: VllmMetrics | None = None
        self.swap_ins = 0  # times a swap group brought it up (cold start or wake)
        self.wakes = 0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for /status and `gpufleet status`."""
        now = time.monotonic()
        return {
            "name": self.name,
            "engine": self.model.engine,
            "state": str(self.state),
            "swap_group": self.model.swap_group,
            "swap_ins": self.swap_ins,
            "wakes": self.wakes,
            "phase": self.phase,
            # A dead process's pid may already belong to something else: show its exit code instead.
            "pid": self.process.pid if self.process and self.process.returncode is None else None,
            "exit_code": self.process.returncode if self.process else None,
            "base_url": self.spec.base_url if self.spec and self.state == EngineState.READY else None,
            "in_flight": self.in_flight,
            "uptime_s": round(now - self.ready_at, 1) if self.state == EngineState.READY else None,
            "idle_s": round(now - self.last_used, 1),
            "idle_ttl_s": self.model.idle_ttl_s,
            "preload": self.model.preload,
            "restarts": self.restarts,
            "last_error": self.last_error or None,
            "warnings": list(self.spec.warnings) if self.spec else [],
            "log_path": str(self.process.log_path) if self.process else None,
            "kv_cache": _kv_cache_view(self.startup_log, self.spec.extra if self.spec else {}),
            "engine_metrics": _metrics_view(self.engine_metrics) if self.state == EngineState.READY else None,
        }


def _metrics_view(metrics: VllmMetrics | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {
        "requests_running": metrics.requests_running,
        "requests_waiting": metrics.requests_waiting,
        "kv_cache_usage": metrics.kv_cache_usage,
        "kv_cache_tokens": metrics.kv_cache_tokens,
        "prompt_tokens_total": metrics.prompt_tokens_total,
        "generation_tokens_total": metrics.generation_tokens_total,
        "ttft_mean_s": metrics.ttft_mean_s,
        "sleep_state": str(metrics.sleep_state) if metrics.sleep_state else None,
    }


def _kv_cache_view(startup: VllmStartupLog | None, extra: dict[str, str]) -> dict[str, Any] | None:
    if startup is None or startup.kv_cache is None:
        return None
    kv = startup.kv_cache
    # The planner's figure for this launch, and its error against what vLLM logged (issue 24).
    planned = int(extra["planned_kv_tokens"]) if extra.get("planned_kv_tokens", "").isdigit() else None
    error = round((planned - kv.tokens) / kv.tokens, 4) if planned is not None and kv.tokens else None
    return {
        "device": kv.device,
        "tokens": kv.tokens,
        "max_concurrency": kv.max_concurrency,
        "concurrency_tokens": kv.concurrency_tokens,
        "available_gib": kv.available_gib,
        "planned_tokens": planned,
        "planner_error": error,
    }
