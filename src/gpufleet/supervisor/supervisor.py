"""The supervisor owns engine processes: start on demand, wait for ready, idle unload, crash restart, clean stop.

State of one managed model (an `EngineSlot`, supervisor/slot.py):

    stopped ──start──► starting ──health 200──► ready ──idle TTL──► stopping ──► stopped
                          │  ▲                    │  ▲
                 exit/timeout│ backoff elapsed     │  │ wake_up (swap group, vLLM sleep mode)
                          ▼  │                    ▼  │
                        backoff ◄──── (crash)    sleeping            too many failures ──► failed

Requests wait for a starting engine up to `server.queue_timeout_s`; after that (or while in backoff/failed)
they get EngineNotReady (HTTP 503 + Retry-After). Members of a swap group go through their group's queue first
(supervisor/swap.py has the policy). Everything runs on the gateway's event loop; no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gpufleet.config import SwapGroupConfig, VllmModel
from gpufleet.engines import MANAGED_ENGINES
from gpufleet.engines.base import Engine
from gpufleet.engines.vllm_log import Phase, VllmStartupLog
from gpufleet.engines.vllm_metrics import VllmMetrics
from gpufleet.errors import EngineError, EngineNotReady, GpufleetError, RequestError
from gpufleet.paths import logs_dir
from gpufleet.supervisor.engine_probe import HealthWait, scrape_vllm_metrics, wait_healthy
from gpufleet.supervisor.ports import free_port
from gpufleet.supervisor.process import EngineProcess
from gpufleet.supervisor.sleep import (
    MEMINFO,
    engine_root,
    host_available_mib,
    sleep_engine,
    sleep_refusal,
    wake_engine,
)
from gpufleet.supervisor.slot import EngineSlot, EngineState, ManagedModel, Upstream
from gpufleet.supervisor.swap import Freed, GroupHooks, Member, Occupancy, SwapGroup

log = logging.getLogger("gpufleet.supervisor")

__all__ = ["EngineSlot", "EngineState", "Supervisor", "SwapResult", "Upstream"]

_OCCUPANCY = {
    EngineState.STARTING: Occupancy.UP, EngineState.READY: Occupancy.UP, EngineState.BACKOFF: Occupancy.UP,
    EngineState.STOPPING: Occupancy.LEAVING,
    EngineState.STOPPED: Occupancy.OFF, EngineState.FAILED: Occupancy.OFF, EngineState.SLEEPING: Occupancy.OFF,
}


@dataclass(frozen=True)
class SwapResult:
    """What an on-demand swap did: the model's upstream and the members freed for it."""

    upstream: Upstream
    group: str
    freed: list[Freed] = field(default_factory=list)


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
        swap_groups: Mapping[str, SwapGroupConfig] | None = None,
        engines: Mapping[str, Engine] | None = None,
        meminfo_path: Path = MEMINFO,
        host_ram_reserve_mib: int = 2048,
    ) -> None:
        self.slots = {name: EngineSlot(name, model) for name, model in models.items()}
        self.queue_timeout_s = queue_timeout_s
        self.health_interval_s = health_interval_s
        self.reaper_interval_s = reaper_interval_s
        self.scrape_interval_s = scrape_interval_s
        self.engines: Mapping[str, Engine] = engines if engines is not None else MANAGED_ENGINES
        self.meminfo_path = meminfo_path
        self.host_ram_reserve_mib = host_ram_reserve_mib
        self._scraper: asyncio.Task[None] | None = None
        self._on_event = on_event
        self._http: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.groups: dict[str, SwapGroup] = {}
        declared = dict(swap_groups or {})
        for group_name in sorted({s.model.swap_group for s in self.slots.values() if s.model.swap_group}):
            # A group named only by its members is exclusive: one member up at a time.
            config = declared.get(group_name) or SwapGroupConfig.model_validate({})
            names = [n for n, s in self.slots.items() if s.model.swap_group == group_name]
            self.groups[group_name] = SwapGroup(group_name, config, names, self._group_hooks(group_name))

    # ---- lifecycle of the supervisor itself -------------------------------------------------------------

    async def start(self) -> None:
        """Begin supervising: start the idle reaper and the models marked `preload`."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._reaper = asyncio.create_task(self._reap_idle(), name="idle-reaper")
        self._scraper = asyncio.create_task(self._scrape_loop(), name="metrics-scraper")
        for slot in self.slots.values():
            if not slot.model.preload:
                continue
            group = self._group_of(slot)
            if group is None:
                self._begin_start(slot)
            elif not group.preload(slot.name):
                self._emit(slot, f"not preloaded: swap group {group.name!r} is full")

    async def close(self) -> None:
        """Stop every engine (SIGTERM, then SIGKILL after each model's grace period)."""
        self._closed = True
        for group in self.groups.values():
            await group.close()
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
        """The upstream of a ready engine, starting it if needed and waiting up to `wait_s`.

        A swap-group member takes its turn in the group's queue (and may free other members) first.
        """
        slot = self.slots[name]
        if self._group_of(slot) is not None:
            async with self.lease(name, wait_s=wait_s) as upstream:
                return upstream
        return await self._ensure_slot_ready(slot, self.queue_timeout_s if wait_s is None else wait_s)

    @contextlib.asynccontextmanager
    async def lease(self, name: str, *, wait_s: float | None = None) -> AsyncIterator[Upstream]:
        """Hold a model busy for one request: it is not idle-unloaded (or swapped) while leased."""
        async with self._leased(name, wait_s) as (upstream, _freed):
            yield upstream

    async def swap_to(self, name: str, *, wait_s: float | None = None) -> SwapResult:
        """Bring a swap-group member up now (the seed's `gpu-mode r1`), freeing idle members if it needs room."""
        slot = self.slots[name]
        group = self._group_of(slot)
        if group is None:
            raise RequestError(
                f"model {name!r} is in no swap group; set models.{name}.swap_group in gpufleet.yaml, "
                f"or use POST /admin/models/{name}/start to just start it")
        async with self._leased(name, wait_s) as (upstream, freed):
            return SwapResult(upstream, group.name, freed)

    @contextlib.asynccontextmanager
    async def _leased(self, name: str, wait_s: float | None) -> AsyncIterator[tuple[Upstream, list[Freed]]]:
        slot = self.slots[name]
        slot.last_used = time.monotonic()
        wait = self.queue_timeout_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait
        group = self._group_of(slot)
        freed: list[Freed] = []
        if group is None:
            slot.in_flight += 1
        else:
            freed = await group.admit(name, wait)  # counts the request in flight once admitted
        try:
            upstream = await self._ensure_slot_ready(slot, max(0.0, deadline - time.monotonic()))
            yield upstream, freed
        finally:
            self._release(name)

    async def stop_model(self, name: str) -> None:
        """Stop one engine on purpose (it starts again on the next request)."""
        await self._stop_slot(self.slots[name], EngineState.STOPPED)

    def status(self) -> list[dict[str, Any]]:
        """Snapshots of every managed engine."""
        snapshots = []
        for slot in self.slots.values():
            item = slot.snapshot()
            group = self._group_of(slot)
            item["queued"] = group.queued_for(slot.name) if group else 0
            snapshots.append(item)
        return snapshots

    def swap_groups_status(self) -> dict[str, dict[str, Any]]:
        """Each swap group: budget, use, queue, swaps so far, who is up."""
        return {name: group.snapshot() for name, group in self.groups.items()}

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
        slot.engine_metrics = await scrape_vllm_metrics(self._http, spec.metrics_url, name) or slot.engine_metrics
        return slot.engine_metrics

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scrape_interval_s)
            for name in self.slots:
                await self.scrape(name)

    # ---- internals ----------------------------------------------------------------------------------------

    def _emit(self, slot: EngineSlot, message: str) -> None:
        log.info("%s: %s", slot.name, message)
        if self._on_event:
            self._on_event(slot.name, message)

    def _retry_hint(self, slot: EngineSlot) -> int:
        if slot.state == EngineState.BACKOFF:
            return max(1, int(slot.retry_at - time.monotonic()) + 1)
        return 5

    async def _ensure_slot_ready(self, slot: EngineSlot, wait: float) -> Upstream:
        name = slot.name
        if slot.state == EngineState.READY and slot.spec is not None:
            return Upstream(slot.spec.base_url)
        if self._group_of(slot) is not None:
            # Admitted by the group, which started (or woke) it; anything else means it was stopped since.
            if slot.state not in (EngineState.STARTING, EngineState.BACKOFF):
                raise EngineNotReady(f"model {name!r} was {slot.state} before it could serve; retry",
                                     retry_after_s=1)
        elif slot.state in (EngineState.STOPPED, EngineState.STOPPING):
            if slot.state == EngineState.STOPPING:
                await self._wait_stopped(slot)
            self._begin_start(slot)
        elif slot.state == EngineState.FAILED:
            self._check_retry_allowed(slot)
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

    def _check_retry_allowed(self, slot: EngineSlot) -> None:
        if time.monotonic() < slot.retry_at:
            raise EngineNotReady(
                f"model {slot.name!r} failed to start: {slot.last_error}",
                retry_after_s=max(1, int(slot.retry_at - time.monotonic())),
            )

    # ---- swap groups: the hooks the coordinator calls ------------------------------------------------------

    def _group_of(self, slot: EngineSlot) -> SwapGroup | None:
        return self.groups.get(slot.model.swap_group) if slot.model.swap_group else None

    def _group_hooks(self, group_name: str) -> GroupHooks:
        def members() -> list[Member]:
            budgeted = self.groups[group_name].config.memory_mib is not None
            return [
                Member(slot.name, _OCCUPANCY[slot.state], (slot.model.memory_mib or 1) if budgeted else 1,
                       slot.in_flight, slot.last_used)
                for slot in self.slots.values() if slot.model.swap_group == group_name
            ]

        def reserve(name: str) -> None:
            self.slots[name].in_flight += 1

        def check_start(name: str) -> None:
            slot = self.slots[name]
            if slot.state == EngineState.FAILED:
                self._check_retry_allowed(slot)

        return GroupHooks(members=members, reserve=reserve, release=self._release,
                          free=self._free_member, bring_up=self._bring_up_member, check_start=check_start)

    def _release(self, name: str) -> None:
        slot = self.slots[name]
        slot.in_flight -= 1
        slot.last_used = time.monotonic()
        self._notify_group(slot)

    def _notify_group(self, slot: EngineSlot) -> None:
        group = self._group_of(slot)
        if group is not None and not self._closed:
            group.pump()

    async def _free_member(self, name: str) -> str:
        """Make an idle member give its GPU memory back: sleep (level 1) when it can, else stop."""
        slot = self.slots[name]
        process = slot.process
        model = slot.model
        if (isinstance(model, VllmModel) and model.enable_sleep_mode and slot.state == EngineState.READY
                and slot.spec is not None and process is not None):
            refusal = sleep_refusal(model.memory_mib, host_available_mib(self.meminfo_path),
                                    self.host_ram_reserve_mib)
            if refusal is None:
                slot.state = EngineState.STOPPING
                slot.phase = "going to sleep"
                slot.stop_requested = True  # an exit now is handled below, not restarted as a crash
                self._emit(slot, "going to sleep (level 1) to free the GPU for its swap group")
                try:
                    assert self._http is not None
                    await sleep_engine(self._http, engine_root(slot.spec.base_url), level=1)
                except EngineError as err:
                    self._emit(slot, f"{err}; stopping it instead")
                else:
                    if slot.process is process and process.returncode is None:
                        slot.state = EngineState.SLEEPING
                        slot.phase = "asleep (level 1: weights in host RAM)"
                        slot.stop_requested = False
                        self._emit(slot, "asleep")
                        return "slept"
            else:
                self._emit(slot, f"stopping instead of sleeping: {refusal}")
        await self._stop_slot(slot, EngineState.STOPPED)
        return "stopped"

    def _bring_up_member(self, name: str) -> None:
        """Begin a cold start or a wake of a member the group made room for (does not wait for ready)."""
        slot = self.slots[name]
        if slot.state in (EngineState.STARTING, EngineState.READY, EngineState.BACKOFF):
            return
        slot.swap_ins += 1
        if slot.state == EngineState.SLEEPING:
            self._new_episode(slot)
            slot.state = EngineState.STARTING
            slot.phase = "waking up"
            self._spawn_task(slot, self._run_wake(slot), "wake")
            return
        if slot.state == EngineState.FAILED:
            self._check_retry_allowed(slot)
            slot.failures = 0
        self._begin_start(slot)

    async def _run_wake(self, slot: EngineSlot) -> None:
        process, spec = slot.process, slot.spec
        assert process is not None and spec is not None and self._http is not None
        self._emit(slot, "waking up")
        started = time.monotonic()
        try:
            await wake_engine(self._http, engine_root(spec.base_url))
        except EngineError as err:
            if slot.state != EngineState.STARTING or slot.process is not process:
                return
            self._emit(slot, f"{err}; cold-starting it instead")
            slot.stop_requested = True
            await process.stop(slot.model.stop_grace_s)
            slot.process = None  # its exit watcher must not take the restart below for a crash
            self._begin_start(slot)
            return
        if slot.state != EngineState.STARTING or slot.process is not process or process.returncode is not None:
            return
        slot.wakes += 1
        self._mark_ready(slot, f"awake in {time.monotonic() - started:.1f} s at {spec.base_url}")

    def _new_episode(self, slot: EngineSlot) -> None:
        if slot.episode is None or slot.episode.done():
            slot.episode = asyncio.get_running_loop().create_future()
            # A waiter may time out and go away; retrieve exceptions so none is reported as "never retrieved".
            slot.episode.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _spawn_task(self, slot: EngineSlot, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{slot.name}-{name}")
        slot.tasks.add(task)
        task.add_done_callback(slot.tasks.discard)

    def _begin_start(self, slot: EngineSlot) -> None:
        self._new_episode(slot)
        slot.state = EngineState.STARTING
        slot.stop_requested = False
        self._spawn_task(slot, self._run_start(slot), "start")

    async def _run_start(self, slot: EngineSlot) -> None:
        engine = self.engines[slot.model.engine]
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
        assert self._http is not None
        waited = await wait_healthy(
            self._http, spec.health_url, deadline=time.monotonic() + slot.model.ready_timeout_s,
            interval_s=self.health_interval_s,
            # An exit is _watch_exit's to handle; a requested stop is the stopper's.
            gone=lambda: process.returncode is not None or slot.process is not process or slot.stop_requested,
        )
        if waited == HealthWait.HEALTHY:
            self._mark_ready(slot, f"ready in {time.monotonic() - process.started_at:.1f} s at {spec.base_url}")
            return
        if waited == HealthWait.GONE:
            return
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

    def _mark_ready(self, slot: EngineSlot, message: str) -> None:
        slot.state = EngineState.READY
        startup = slot.startup_log
        slot.phase = startup.progress_line() if startup and startup.phase >= Phase.KV_CACHE_ALLOCATED else "ready"
        slot.ready_at = time.monotonic()
        slot.last_used = time.monotonic()
        slot.last_error = ""
        self._emit(slot, message)
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
        self._notify_group(slot)  # a failed member no longer holds its share of the GPU

    async def _restart_after(self, slot: EngineSlot, delay: float) -> None:
        await asyncio.sleep(delay)
        if slot.state == EngineState.BACKOFF and not self._closed:
            slot.restarts += 1
            self._begin_start(slot)

    async def _watch_exit(self, slot: EngineSlot, process: EngineProcess) -> None:
        code = await process.wait()
        if slot.process is process and slot.state == EngineState.SLEEPING and not self._closed:
            # It held no GPU memory; the next request for it cold-starts it through its group.
            slot.state = EngineState.STOPPED
            slot.phase = ""
            slot.last_error = f"engine exited with code {code} while asleep"
            self._emit(slot, slot.last_error)
            return
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
            self._notify_group(slot)
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
        self._notify_group(slot)

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
                    and slot.state in (EngineState.READY, EngineState.SLEEPING)  # a sleeper holds host RAM
                    and slot.in_flight == 0
                    and now - slot.last_used >= ttl
                ):
                    self._emit(slot, f"idle for {now - slot.last_used:.0f} s (ttl {ttl:.0f} s): unloading")
                    await self._stop_slot(slot, EngineState.STOPPED)
