"""The supervisor's hook for multi-node models (`nodes:`): bring the Ray cluster up before vLLM starts, watch it
while vLLM runs, stop the head with the engine.

    starting ─► "ray: 1/2 nodes, 1/2 GPUs (waiting for 10.0.0.2)" ─► all up ─► vLLM (RAY_ADDRESS=head) ─► ready
        a host that was up is gone ─► stop vLLM, fail "ray worker 10.0.0.2 lost" with a restart after backoff,
        whose bring-up waits for the host to come back (its `gpufleet node join` rejoins by itself)

The lifecycle calls `bring_up`, `watch` and `release`; everything else is cluster/ray_cluster.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

import aiohttp

from gpufleet.cluster.ray_cluster import RayHead
from gpufleet.config import VllmModel
from gpufleet.engine_supervisor.process import EngineProcess
from gpufleet.engine_supervisor.slot import EngineSlot, EngineState, ManagedModel
from gpufleet.engines.vllm_resolve import resolve_python
from gpufleet.errors import EngineError, EngineNotReady
from gpufleet.paths import logs_dir


class EngineLifecycle(Protocol):
    """What the hook uses of engine_supervisor/lifecycle.py's EngineLifecycle (which holds the hook: so the hook names
    only this, and the two modules do not import each other)."""

    http: aiohttp.ClientSession | None
    closed: bool

    def emit(self, slot: EngineSlot, message: str) -> None: ...

    def fail(self, slot: EngineSlot, message: str, *, retry: bool, log_tail: str = "") -> None: ...

    def _spawn_task(self, slot: EngineSlot, coro: Coroutine[Any, Any, None], name: str) -> None: ...

    def _new_episode(self, slot: EngineSlot) -> None: ...


class ClusterHook:
    """The Ray heads of the multi-node models, by model name."""

    def __init__(self, models: Mapping[str, ManagedModel], *, watch_interval_s: float = 1.0) -> None:
        self.models = {n: m for n, m in models.items() if isinstance(m, VllmModel) and m.nodes}
        self.heads: dict[str, RayHead] = {}
        self.watch_interval_s = watch_interval_s
        self._watches: dict[str, asyncio.Task[None]] = {}

    def __bool__(self) -> bool:
        return bool(self.models)

    def _head(self, name: str) -> RayHead | None:
        model = self.models.get(name)
        if model is None:
            return None
        if name not in self.heads:
            ray = model.ray
            python = resolve_python(ray.python if ray and ray.python else model.python, model.device)
            self.heads[name] = RayHead(name, model, python, logs_dir())
        return self.heads[name]

    async def bring_up(self, life: EngineLifecycle, slot: EngineSlot) -> bool:
        """Start the head and wait for every node (progress in the slot's phase); False after failing the slot."""
        if slot.name not in self.models:
            return True

        def progress(line: str) -> None:
            if slot.state == EngineState.STARTING:
                slot.phase = line
                life.emit(slot, line)

        try:
            head = self._head(slot.name)
            assert head is not None and life.http is not None
            if head.process is None or not head.process.running:
                progress("ray: starting the head")
            await head.ensure_started()
        except EngineError as err:
            # Not the head, no Ray, no vLLM python: retrying will not help.
            life.fail(slot, str(err), retry=False)
            return False
        try:
            view = await head.bring_up(
                life.http,
                time.monotonic() + slot.model.ready_timeout_s,
                progress,
                gone=lambda: slot.stop_requested or life.closed,
            )
            if view is None:  # stopped while waiting for the workers: the stopper settled the state
                if slot.episode and not slot.episode.done():
                    slot.episode.set_exception(EngineNotReady(f"model {slot.name!r} was stopped", retry_after_s=1))
                return False
        except EngineError as err:
            # A missing worker may come back: restart with backoff (the head keeps running for it to rejoin).
            life.fail(slot, str(err), retry=True)
            return False
        return True

    def watch(self, life: EngineLifecycle, slot: EngineSlot, process: EngineProcess) -> None:
        """Watch the cluster while `process` serves: a lost host stops it and fails the slot with the reason."""
        head = self.heads.get(slot.name)
        if head is None or life.http is None:
            return
        self._cancel_watch(slot.name)

        def lost(reason: str) -> None:
            if slot.process is not process or life.closed:
                return
            if (
                process.returncode is None
                and not slot.stop_requested
                and slot.state in (EngineState.STARTING, EngineState.READY)
            ):
                life._spawn_task(slot, self._fail_lost(life, slot, process, reason), "ray-lost")
            elif process.returncode is not None and slot.state in (
                EngineState.BACKOFF,
                EngineState.STARTING,
                EngineState.FAILED,
            ):
                # vLLM noticed first and exited ("crashed"); the lost node is the cause to show.
                slot.last_error = f"{reason}; the engine exited with code {process.returncode}"
                life.emit(slot, slot.last_error)

        self._watches[slot.name] = asyncio.create_task(
            head.watch(life.http, lost, self.watch_interval_s), name=f"{slot.name}-ray-watch"
        )

    async def _fail_lost(self, life: EngineLifecycle, slot: EngineSlot, process: EngineProcess, reason: str) -> None:
        was = slot.state
        slot.stop_requested = True  # the exit that follows is this failure, not a crash
        life.emit(slot, f"{reason}: stopping the engine")
        await process.stop(slot.model.stop_grace_s)
        if slot.process is not process or life.closed:
            return
        if was == EngineState.READY:
            life._new_episode(slot)  # requests arriving during the restart wait for it
        life.fail(slot, reason, retry=True)

    def _cancel_watch(self, name: str) -> None:
        task = self._watches.pop(name, None)
        if task is not None:
            task.cancel()

    async def release(self, name: str) -> None:
        """The engine is down for good (stopped, failed): stop watching and stop the head."""
        self._cancel_watch(name)
        head = self.heads.get(name)
        if head is not None:
            await head.stop()

    async def close(self) -> None:
        """Stop every head (supervisor shutdown)."""
        for name in list(self.heads):
            with contextlib.suppress(Exception):
                await self.release(name)

    def status(self, name: str) -> dict[str, Any]:
        """`{"ray": {...}}` for a multi-node model's /status entry, `{}` for the others."""
        if name not in self.models:
            return {}
        head = self.heads.get(name)
        model = self.models[name]
        return {"ray": head.snapshot() if head else {"head": None, "nodes_expected": len(model.nodes)}}
