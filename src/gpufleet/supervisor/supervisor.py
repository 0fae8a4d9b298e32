"""The supervisor owns engine processes: start on demand, wait for ready, idle unload, crash restart, clean stop.

State of one managed model (an `EngineSlot`):

    stopped ──start──► starting ──health 200──► ready ──idle TTL──► stopping ──► stopped
                          │  ▲                    │
                 exit/timeout│ backoff elapsed     │ process exited unexpectedly
                          ▼  │                    ▼
                        backoff ◄─────────────── (crash)      too many failures ──► failed

Requests wait for a starting engine up to `server.queue_timeout_s`; after that (or while in backoff/failed)
they get EngineNotReady (HTTP 503 + Retry-After). Everything runs on the gateway's event loop; no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gpufleet.config import LlamaCppModel, VllmModel
from gpufleet.engines import MANAGED_ENGINES
from gpufleet.engines.base import LaunchSpec
from gpufleet.engines.vllm_log import Phase, VllmStartupLog
from gpufleet.engines.vllm_metrics import VllmMetrics, parse_vllm_metrics
from gpufleet.errors import EngineError, EngineNotReady, GpufleetError
from gpufleet.paths import logs_dir
from gpufleet.supervisor.ports import free_port
from gpufleet.supervisor.process import EngineProcess

log = logging.getLogger("gpufleet.supervisor")

ManagedModel = LlamaCppModel | VllmModel


class EngineState(enum.StrEnum):
    """Lifecycle states of a managed engine."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"


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
        self.tasks: set[asyncio.Task[Any]] = set()
        self.startup_log: VllmStartupLog | None = None
        self.engine_metrics: VllmMetrics | None = None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view for /status and `gpufleet status`."""
        now = time.monotonic()
        return {
            "name": self.name,
            "engine": self.model.engine,
            "state": str(self.state),
            "phase": self.phase,
            "pid": self.process.pid if self.process else None,
            "base_url": self.spec.base_url if self.spec and self.state == EngineState.READY else None,
            "in_flight": self.in_flight,
            "uptime_s": round(now - self.ready_at, 1) if self.state == EngineState.READY else None,
            "idle_s": round(now - self.last_used, 1),
            "idle_ttl_s": self.model.idle_ttl_s,
            "restarts": self.restarts,
            "last_error": self.last_error or None,
            "log_path": str(self.process.log_path) if self.process else None,
            "kv_cache": _kv_cache_view(self.startup_log),
            "engine_metrics": _metrics_view(self.engine_metrics) if self.state == EngineState.READY else None,
        }


def _metrics_view(metrics: VllmMetrics | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {"requests_running": metrics.requests_running, "requests_waiting": metrics.requests_waiting,
            "kv_cache_usage": metrics.kv_cache_usage, "kv_cache_tokens": metrics.kv_cache_tokens,
            "prompt_tokens_total": metrics.prompt_tokens_total,
            "generation_tokens_total": metrics.generation_tokens_total,
            "ttft_mean_s": metrics.ttft_mean_s,
            "sleep_state": str(metrics.sleep_state) if metrics.sleep_state else None}


def _kv_cache_view(startup: VllmStartupLog | None) -> dict[str, Any] | None:
    if startup is None or startup.kv_cache is None:
        return None
    kv = startup.kv_cache
    return {"device": kv.device, "tokens": kv.tokens, "max_concurrency": kv.max_concurrency,
            "concurrency_tokens": kv.concurrency_tokens, "available_gib": kv.available_gib}


class Supervisor:
    """Starts, watches, restarts and stops the engine processes of all managed models."""

    def __init__(
        self,
        models: Mapping[str, ManagedModel],
        *,
        queue_timeout_s: float = 300,
        health_interval_s: float = 0.25,
        reaper_interval_s: float = 1.0,
        scrape_interval_s: float = 5.0,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.slots = {name: EngineSlot(name, model) for name, model in models.items()}
        self.queue_timeout_s = queue_timeout_s
        self.health_interval_s = health_interval_s
        self.reaper_interval_s = reaper_interval_s
        self.scrape_interval_s = scrape_interval_s
        self._scraper: asyncio.Task[None] | None = None
        self._on_event = on_event
        self._http: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    # ---- lifecycle of the supervisor itself -------------------------------------------------------------

    async def start(self) -> None:
        """Begin supervising: start the idle reaper and the models marked `preload`."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._reaper = asyncio.create_task(self._reap_idle(), name="idle-reaper")
        self._scraper = asyncio.create_task(self._scrape_loop(), name="metrics-scraper")
        for slot in self.slots.values():
            if slot.model.preload:
                self._begin_start(slot)

    async def close(self) -> None:
        """Stop every engine (SIGTERM, then SIGKILL after each model's grace period)."""
        self._closed = True
        for task in (self._reaper, self._scraper):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(self._stop_slot(slot, EngineState.STOPPED) for slot in self.slots.values()))
        for slot in self.slots.values():
            for task in list(slot.tasks):
                task.cancel()
        if self._http:
            await self._http.close()

    # ---- what the gateway calls ------------------------------------------------------------------------

    def is_managed(self, name: str) -> bool:
        return name in self.slots

    async def ensure_ready(self, name: str, *, wait_s: float | None = None) -> Upstream:
        """The upstream of a ready engine, starting it if needed and waiting up to `wait_s`."""
        slot = self.slots[name]
        if slot.state == EngineState.READY and slot.spec is not None:
            return Upstream(slot.spec.base_url)
        wait = self.queue_timeout_s if wait_s is None else wait_s
        if slot.state in (EngineState.STOPPED, EngineState.STOPPING):
            if slot.state == EngineState.STOPPING:
                await self._wait_stopped(slot)
            self._begin_start(slot)
        elif slot.state == EngineState.FAILED:
            if time.monotonic() < slot.retry_at:
                raise EngineNotReady(
                    f"model {name!r} failed to start: {slot.last_error}",
                    retry_after_s=max(1, int(slot.retry_at - time.monotonic())),
                )
            slot.failures = 0
            self._begin_start(slot)
        episode = slot.episode
        assert episode is not None
        try:
            await asyncio.wait_for(asyncio.shield(episode), timeout=wait)
        except TimeoutError:
            verb = "restarting after a crash" if slot.state == EngineState.BACKOFF else "still starting"
            phase = f" ({slot.phase})" if slot.phase else ""
            raise EngineNotReady(
                f"model {name!r} is {verb}{phase}; retry shortly", retry_after_s=self._retry_hint(slot)
            ) from None
        if slot.state != EngineState.READY or slot.spec is None:
            raise EngineNotReady(f"model {name!r} is not ready ({slot.state})", retry_after_s=self._retry_hint(slot))
        return Upstream(slot.spec.base_url)

    @contextlib.asynccontextmanager
    async def lease(self, name: str, *, wait_s: float | None = None) -> AsyncIterator[Upstream]:
        """Hold a model busy for one request: it is not idle-unloaded (or swapped) while leased."""
        slot = self.slots[name]
        slot.in_flight += 1
        slot.last_used = time.monotonic()
        try:
            yield await self.ensure_ready(name, wait_s=wait_s)
        finally:
            slot.in_flight -= 1
            slot.last_used = time.monotonic()

    async def stop_model(self, name: str) -> None:
        """Stop one engine on purpose (it starts again on the next request)."""
        await self._stop_slot(self.slots[name], EngineState.STOPPED)

    def status(self) -> list[dict[str, Any]]:
        """Snapshots of every managed engine."""
        return [slot.snapshot() for slot in self.slots.values()]

    def engine_url(self, name: str) -> str | None:
        """The engine's own base URL when ready (for benchmarks and debugging)."""
        slot = self.slots.get(name)
        if slot and slot.state == EngineState.READY and slot.spec:
            return slot.spec.base_url
        return None

    async def scrape(self, name: str) -> VllmMetrics | None:
        """Scrape a ready vLLM engine's /metrics now (running/waiting, KV usage, KV capacity)."""
        slot = self.slots[name]
        spec = slot.spec
        if slot.state != EngineState.READY or spec is None or spec.log_phase_parser != "vllm" or not spec.metrics_url:
            return None
        assert self._http is not None
        try:
            async with self._http.get(spec.metrics_url) as resp:
                text = await resp.text()
            slot.engine_metrics = parse_vllm_metrics(text, model_name=name, source=spec.metrics_url)
        except (aiohttp.ClientError, TimeoutError, OSError, GpufleetError) as err:
            log.debug("%s: metrics scrape failed: %s", name, err)
        return slot.engine_metrics

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scrape_interval_s)
            for name in self.slots:
                await self.scrape(name)

    # ---- internals -------------------------------------------------------------------------------------

    def _emit(self, slot: EngineSlot, message: str) -> None:
        log.info("%s: %s", slot.name, message)
        if self._on_event:
            self._on_event(slot.name, message)

    def _retry_hint(self, slot: EngineSlot) -> int:
        if slot.state == EngineState.BACKOFF:
            return max(1, int(slot.retry_at - time.monotonic()) + 1)
        return 5

    def _spawn_task(self, slot: EngineSlot, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{slot.name}-{name}")
        slot.tasks.add(task)
        task.add_done_callback(slot.tasks.discard)

    def _begin_start(self, slot: EngineSlot) -> None:
        if slot.episode is None or slot.episode.done():
            slot.episode = asyncio.get_running_loop().create_future()
            # A waiter may time out and go away; retrieve exceptions so none is reported as "never retrieved".
            slot.episode.add_done_callback(lambda f: f.cancelled() or f.exception())
        slot.state = EngineState.STARTING
        slot.stop_requested = False
        self._spawn_task(slot, self._run_start(slot), "start")

    async def _run_start(self, slot: EngineSlot) -> None:
        engine = MANAGED_ENGINES[slot.model.engine]
        slot.phase = "preparing"
        try:
            # Resolving the model may assemble a GGUF (seconds): keep the event loop free.
            spec = await asyncio.to_thread(engine.launch_spec, slot.name, slot.model, free_port())
        except GpufleetError as err:
            self._fail(slot, str(err), retry=False)
            return
        slot.spec = spec
        on_line = None
        if spec.log_phase_parser == "vllm":
            startup = slot.startup_log = VllmStartupLog()

            def on_line(line: str) -> None:
                # vLLM's log tells where a 1–10 minute cold start is (seed 000/004) and why it failed.
                if startup.feed(line) and slot.state == EngineState.STARTING:
                    slot.phase = startup.progress_line()
                    self._emit(slot, slot.phase)
        else:
            slot.startup_log = None
        process = EngineProcess(spec, logs_dir() / f"{slot.name}.log", on_line=on_line)
        slot.process = process
        self._emit(slot, f"starting (port {spec.port})")
        slot.phase = "loading"
        try:
            await process.spawn()
        except OSError as err:
            self._fail(slot, f"cannot start engine: {err}", retry=False)
            return
        self._spawn_task(slot, self._watch_exit(slot, process), "watch")
        deadline = time.monotonic() + slot.model.ready_timeout_s
        assert self._http is not None
        while time.monotonic() < deadline:
            if process.returncode is not None or slot.process is not process:
                return  # _watch_exit handles it
            if slot.stop_requested:
                return
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                async with self._http.get(spec.health_url) as resp:
                    if resp.status == 200:
                        self._mark_ready(slot)
                        return
            await asyncio.sleep(self.health_interval_s)
        tail = process.log_tail()
        slot.stop_requested = True  # the exit that follows is ours, not a crash
        self._fail(
            slot,
            f"engine did not become ready within {slot.model.ready_timeout_s:.0f} s "
            f"(raise models.{slot.name}.ready_timeout_s if the model is just slow to load)",
            retry=False,
            log_tail=tail,
        )
        await process.stop(slot.model.stop_grace_s)

    def _mark_ready(self, slot: EngineSlot) -> None:
        slot.state = EngineState.READY
        startup = slot.startup_log
        slot.phase = startup.progress_line() if startup and startup.phase >= Phase.KV_CACHE_ALLOCATED else "ready"
        slot.ready_at = time.monotonic()
        slot.last_used = time.monotonic()
        slot.last_error = ""
        assert slot.process is not None
        elapsed = slot.ready_at - slot.process.started_at
        self._emit(slot, f"ready in {elapsed:.1f} s at {slot.spec.base_url if slot.spec else '?'}")
        if slot.episode and not slot.episode.done():
            slot.episode.set_result(None)

    def _fail(self, slot: EngineSlot, message: str, *, retry: bool, log_tail: str = "") -> None:
        slot.failures += 1
        slot.last_error = message
        policy = slot.model.restart
        if retry and slot.failures <= policy.max_restarts and not self._closed:
            delay = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** (slot.failures - 1))
            slot.state = EngineState.BACKOFF
            slot.phase = f"restart in {delay:.0f} s"
            slot.retry_at = time.monotonic() + delay
            self._emit(slot, f"{message}; restarting in {delay:.1f} s (attempt {slot.failures})")
            self._spawn_task(slot, self._restart_after(slot, delay), "restart")
            return
        slot.state = EngineState.FAILED
        slot.phase = "failed"
        slot.retry_at = time.monotonic() + policy.backoff_max_s
        self._emit(slot, f"failed: {message}")
        if slot.episode and not slot.episode.done():
            slot.episode.set_exception(EngineError(f"model {slot.name!r}: {message}", log_tail=log_tail))

    async def _restart_after(self, slot: EngineSlot, delay: float) -> None:
        await asyncio.sleep(delay)
        if slot.state == EngineState.BACKOFF and not self._closed:
            slot.restarts += 1
            self._begin_start(slot)

    async def _watch_exit(self, slot: EngineSlot, process: EngineProcess) -> None:
        code = await process.wait()
        if slot.process is not process or slot.stop_requested or self._closed:
            return
        was = slot.state
        tail = process.log_tail()
        uptime = time.monotonic() - slot.ready_at if was == EngineState.READY else 0.0
        if uptime >= slot.model.restart.stable_after_s:
            slot.failures = 0  # it ran fine for a while: this is a fresh crash, not a crash loop
        what = "crashed" if was == EngineState.READY else "exited during startup"
        startup = slot.startup_log
        if was == EngineState.STARTING and startup is not None and startup.failure is not None:
            # A recognised cause (OOM, max_model_len too large, bad flag...) will not go away by retrying.
            cause = startup.failure
            self._fail(slot, f"engine {what} with exit code {code}: {cause.cause}: {cause.hint}",
                       retry=False, log_tail=tail)
            return
        if was == EngineState.READY and (slot.episode is None or slot.episode.done()):
            slot.episode = asyncio.get_running_loop().create_future()
            slot.episode.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._fail(slot, f"engine {what} with exit code {code}", retry=True, log_tail=tail)
        if slot.state == EngineState.FAILED:
            slot.last_error = f"engine {what} with exit code {code}; last log lines:\n{tail}"

    async def _stop_slot(self, slot: EngineSlot, final: EngineState) -> None:
        process = slot.process
        slot.stop_requested = True
        if process is None or process.returncode is not None:
            slot.state = final
            slot.phase = ""
            return
        slot.state = EngineState.STOPPING
        self._emit(slot, "stopping")
        await process.stop(slot.model.stop_grace_s)
        if slot.process is process:
            slot.state = final
            slot.phase = ""
        if slot.episode and not slot.episode.done():
            slot.episode.set_exception(EngineNotReady(f"model {slot.name!r} was stopped", retry_after_s=1))
        self._emit(slot, "stopped")

    async def _wait_stopped(self, slot: EngineSlot) -> None:
        while slot.state == EngineState.STOPPING:
            await asyncio.sleep(0.05)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(self.reaper_interval_s)
            now = time.monotonic()
            for slot in self.slots.values():
                ttl = slot.model.idle_ttl_s
                if (
                    ttl > 0
                    and slot.state == EngineState.READY
                    and slot.in_flight == 0
                    and now - slot.last_used >= ttl
                ):
                    self._emit(slot, f"idle for {now - slot.last_used:.0f} s (ttl {ttl:.0f} s): unloading")
                    await self._stop_slot(slot, EngineState.STOPPED)
