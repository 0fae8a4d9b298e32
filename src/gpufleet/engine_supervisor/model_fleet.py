"""The supervisor owns the engines of all managed models: start on demand, idle unload, swap groups, clean stop.

It decides *when* an engine changes state; engine_supervisor/lifecycle.py does the transitions themselves (its
docstring has the state diagram). Requests wait for a starting engine up to `server.queue_timeout_s`; after
that (or while in backoff/failed) they get EngineNotReady (HTTP 503 + Retry-After). Members of a swap group go
through their group's queue first (engine_supervisor/swap.py has the policy). Everything runs on the gateway's event
loop; no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gpufleet.config import SwapGroupConfig
from gpufleet.engine_supervisor.cluster_hook import ClusterHook
from gpufleet.engine_supervisor.engine_log import engine_log_view
from gpufleet.engine_supervisor.engine_probe import scrape_vllm_metrics
from gpufleet.engine_supervisor.lifecycle import EngineLifecycle
from gpufleet.engine_supervisor.sleep import MEMINFO
from gpufleet.engine_supervisor.slot import EngineSlot, EngineState, ManagedModel, Upstream
from gpufleet.engine_supervisor.swap import Freed, GroupHooks, Member, Occupancy, SwapGroup
from gpufleet.engines import MANAGED_ENGINES
from gpufleet.engines.base import Engine
from gpufleet.engines.vllm_metrics import VllmMetrics
from gpufleet.errors import EngineNotReady, RequestError

log = logging.getLogger("gpufleet.engine_supervisor")

__all__ = ["EngineSlot", "EngineState", "Supervisor", "SwapResult", "Upstream"]

_OCCUPANCY = {
    EngineState.STARTING: Occupancy.UP,
    EngineState.READY: Occupancy.UP,
    EngineState.BACKOFF: Occupancy.UP,
    EngineState.STOPPING: Occupancy.LEAVING,
    EngineState.STOPPED: Occupancy.OFF,
    EngineState.FAILED: Occupancy.OFF,
    EngineState.SLEEPING: Occupancy.OFF,
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
        engines: Mapping[str, Engine[Any, Any]] | None = None,
        meminfo_path: Path = MEMINFO,
        host_ram_reserve_mib: int = 2048,
        resolved: Mapping[str, object] | None = None,
    ) -> None:
        self.slots = {name: EngineSlot(name, model) for name, model in models.items()}
        for name, launch in (resolved or {}).items():
            if name in self.slots:
                self.slots[name].resolved = launch  # engines.resolve_launches(): resolved before serving
        self.queue_timeout_s = queue_timeout_s
        self.reaper_interval_s = reaper_interval_s
        self.scrape_interval_s = scrape_interval_s
        self.meminfo_path = meminfo_path
        self.host_ram_reserve_mib = host_ram_reserve_mib
        self.life = EngineLifecycle(
            engines if engines is not None else MANAGED_ENGINES,
            health_interval_s=health_interval_s,
            on_event=on_event,
            on_freed=self._notify_group,
        )
        self.life.cluster = ClusterHook(models) or None  # multi-node models: their Ray heads
        self._scraper: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
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
        # One session for every call to our own engines (health, metrics, sleep/wake), owned by the lifecycle.
        self.life.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._reaper = asyncio.create_task(self._reap_idle(), name="idle-reaper")
        self._scraper = asyncio.create_task(self._scrape_loop(), name="metrics-scraper")
        for slot in self.slots.values():
            if not slot.model.preload:
                continue
            group = self._group_of(slot)
            if group is None:
                self.life.begin_start(slot)
            elif not group.preload(slot.name):
                self.life.emit(slot, f"not preloaded: swap group {group.name!r} is full")

    async def close(self) -> None:
        """Stop every engine (SIGTERM, then SIGKILL after each model's grace period)."""
        self.life.closed = True
        for group in self.groups.values():
            await group.close()
        for task in (self._reaper, self._scraper):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*(self.life.stop(slot, EngineState.STOPPED) for slot in self.slots.values()))
        for slot in self.slots.values():
            for task in list(slot.tasks):
                task.cancel()
        if self.life.cluster:
            await self.life.cluster.close()
        if self.life.http:
            await self.life.http.close()

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
                f"or use POST /admin/models/{name}/start to just start it"
            )
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
        await self.life.stop(self.slots[name], EngineState.STOPPED)

    def status(self) -> list[dict[str, Any]]:
        """Snapshots of every managed engine."""
        snapshots = []
        for slot in self.slots.values():
            item = slot.snapshot()
            group = self._group_of(slot)
            item["queued"] = group.queued_for(slot.name) if group else 0
            item.update(self.life.cluster.status(slot.name) if self.life.cluster else {})
            snapshots.append(item)
        return snapshots

    def engine_log(self, name: str, lines: int, known_secrets: Iterable[str] = ()) -> dict[str, Any]:
        """The last `lines` lines model `name`'s latest engine process printed, credentials masked (engine_log.py)."""
        return engine_log_view(self.slots[name], lines, known_secrets)

    def swap_groups_status(self) -> dict[str, dict[str, Any]]:
        """Each swap group: budget, use, queue, swaps so far, who is up."""
        return {name: group.snapshot() for name, group in self.groups.items()}

    def engine_url(self, name: str) -> str | None:
        """The engine's own base URL when ready (for benchmarks and debugging)."""
        slot = self.slots.get(name)
        if slot and slot.state == EngineState.READY and slot.spec:
            return slot.spec.base_url
        return None

    def ready_upstream(self, name: str) -> Upstream | None:
        """The ready engine's URL and its per-start key, without leasing it (the gateway's side calls: count_tokens)."""
        slot = self.slots.get(name)
        if slot and slot.state == EngineState.READY and slot.spec:
            return Upstream(slot.spec.base_url, slot.spec.api_key)
        return None

    async def scrape(self, name: str) -> VllmMetrics | None:
        """Scrape a ready vLLM engine's /metrics now (running/waiting, KV usage, KV capacity)."""
        slot = self.slots[name]
        spec = slot.spec
        if slot.state != EngineState.READY or spec is None or spec.log_phase_parser != "vllm" or not spec.metrics_url:
            return None
        assert self.life.http is not None
        slot.engine_metrics = await scrape_vllm_metrics(self.life.http, spec.metrics_url, name) or slot.engine_metrics
        return slot.engine_metrics

    async def _scrape_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scrape_interval_s)
            for name in self.slots:
                await self.scrape(name)

    # ---- internals ----------------------------------------------------------------------------------------

    async def _ensure_slot_ready(self, slot: EngineSlot, wait: float) -> Upstream:
        name = slot.name
        if slot.state == EngineState.READY and slot.spec is not None:
            return Upstream(slot.spec.base_url, slot.spec.api_key)
        if self._group_of(slot) is not None:
            # Admitted by the group, which started (or woke) it; anything else means it was stopped since.
            if slot.state not in (EngineState.STARTING, EngineState.BACKOFF):
                raise EngineNotReady(f"model {name!r} was {slot.state} before it could serve; retry", retry_after_s=1)
        elif slot.state in (EngineState.STOPPED, EngineState.STOPPING):
            await self.life.wait_stopped(slot)
            # Many requests may have waited for that stop: only the first begins a start, the rest join it.
            if slot.state == EngineState.STOPPED:
                self.life.begin_start(slot)
        elif slot.state == EngineState.FAILED:
            self.life.check_retry_allowed(slot)
            slot.failures = 0
            self.life.begin_start(slot)
        episode = slot.episode
        assert episode is not None
        try:
            await asyncio.wait_for(asyncio.shield(episode), timeout=wait)
        except TimeoutError:
            verb = "restarting after a crash" if slot.state == EngineState.BACKOFF else "still starting"
            phase = f" ({slot.phase})" if slot.phase else ""
            raise EngineNotReady(
                f"model {name!r} is {verb}{phase}; retry shortly", retry_after_s=self.life.retry_hint(slot)
            ) from None
        if slot.state != EngineState.READY or slot.spec is None:
            raise EngineNotReady(
                f"model {name!r} is not ready ({slot.state})", retry_after_s=self.life.retry_hint(slot)
            )
        return Upstream(slot.spec.base_url, slot.spec.api_key)

    # ---- swap groups: the hooks the coordinator calls ------------------------------------------------------

    def _group_of(self, slot: EngineSlot) -> SwapGroup | None:
        return self.groups.get(slot.model.swap_group) if slot.model.swap_group else None

    def _group_hooks(self, group_name: str) -> GroupHooks:
        def members() -> list[Member]:
            budgeted = self.groups[group_name].config.memory_mib is not None
            return [
                Member(
                    slot.name,
                    _OCCUPANCY[slot.state],
                    (slot.model.memory_mib or 1) if budgeted else 1,
                    slot.in_flight,
                    slot.last_used,
                )
                for slot in self.slots.values()
                if slot.model.swap_group == group_name
            ]

        def reserve(name: str) -> None:
            self.slots[name].in_flight += 1

        def check_start(name: str) -> None:
            slot = self.slots[name]
            if slot.state == EngineState.FAILED:
                self.life.check_retry_allowed(slot)

        return GroupHooks(
            members=members,
            reserve=reserve,
            release=self._release,
            free=self._free_member,
            bring_up=self._bring_up_member,
            check_start=check_start,
        )

    def _release(self, name: str) -> None:
        slot = self.slots[name]
        slot.in_flight -= 1
        slot.last_used = time.monotonic()
        self._notify_group(slot)

    def _notify_group(self, slot: EngineSlot) -> None:
        group = self._group_of(slot)
        if group is not None and not self.life.closed:
            group.pump()

    async def _free_member(self, name: str) -> str:
        """Make an idle member give its GPU memory back: sleep (level 1) when it can, else stop."""
        slot = self.slots[name]
        if await self.life.try_sleep(slot, self.meminfo_path, self.host_ram_reserve_mib):
            return "slept"
        await self.life.stop(slot, EngineState.STOPPED)
        return "stopped"

    def _bring_up_member(self, name: str) -> None:
        """Begin a cold start or a wake of a member the group made room for (does not wait for ready)."""
        slot = self.slots[name]
        if slot.state in (EngineState.STARTING, EngineState.READY, EngineState.BACKOFF):
            return
        slot.swap_ins += 1
        if slot.state == EngineState.SLEEPING:
            self.life.begin_wake(slot)
            return
        if slot.state == EngineState.FAILED:
            self.life.check_retry_allowed(slot)
            slot.failures = 0
        self.life.begin_start(slot)

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
                    self.life.emit(slot, f"idle for {now - slot.last_used:.0f} s (ttl {ttl:.0f} s): unloading")
                    await self.life.stop(slot, EngineState.STOPPED)
