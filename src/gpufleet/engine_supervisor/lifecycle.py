"""One engine's lifecycle: the state transitions of an `EngineSlot` and the process work behind each.

    stopped ──start──► starting ──health 200──► ready ──stop──► stopping ──► stopped
                          │  ▲                    │  ▲
                 exit/timeout│ backoff elapsed     │  │ wake (vLLM sleep mode)
                          ▼  │                    ▼  │
                        backoff ◄──── (crash)    sleeping            too many failures ──► failed

Each bring-up is an *episode*: a future that resolves when the engine is ready or fails, which every request
waiting for the model awaits (shielded, so a waiter that gives up does not cancel it). The supervisor decides
*when* (requests, swap groups, idle TTL); this module does the *how*. Everything runs on the gateway's event
loop; no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from gpufleet.config import VllmModel
from gpufleet.engine_supervisor.cluster_hook import ClusterHook
from gpufleet.engine_supervisor.engine_probe import HealthWait, wait_healthy
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.engine_supervisor.process import EngineProcess
from gpufleet.engine_supervisor.sleep import engine_root, host_available_mib, sleep_engine, sleep_refusal, wake_engine
from gpufleet.engine_supervisor.slot import EngineSlot, EngineState
from gpufleet.engines.base import Engine, LaunchSpec, with_engine_key
from gpufleet.engines.vllm_log import Phase, VllmStartupLog
from gpufleet.errors import EngineError, EngineNotReady, GpufleetError
from gpufleet.model_names import file_stem
from gpufleet.paths import logs_dir
from gpufleet.planner.calibration_file import record_from_launch

log = logging.getLogger("gpufleet.engine_supervisor")


class EngineLifecycle:
    """Starts, wakes, sleeps, restarts and stops engines, one `EngineSlot` at a time."""

    def __init__(
        self,
        engines: Mapping[str, Engine[Any, Any]],
        *,
        health_interval_s: float,
        on_event: Callable[[str, str], None] | None,
        on_freed: Callable[[EngineSlot], None],
    ) -> None:
        self.engines = engines
        self.health_interval_s = health_interval_s
        self._on_event = on_event
        self._on_freed = on_freed  # the slot gave its GPU share back (its swap group may admit others)
        self.http: aiohttp.ClientSession | None = None  # set by the supervisor once the loop runs
        self.closed = False
        self.cluster: ClusterHook | None = None  # Ray heads of multi-node models (`nodes:`), set by the supervisor

    def emit(self, slot: EngineSlot, message: str) -> None:
        """Log a progress message and pass it to the `on_event` listener (the CLI shows them)."""
        log.info("%s: %s", slot.name, message)
        if self._on_event:
            self._on_event(slot.name, message)

    def retry_hint(self, slot: EngineSlot) -> int:
        """Seconds for Retry-After while the slot is not ready."""
        if slot.state == EngineState.BACKOFF:
            return max(1, int(slot.retry_at - time.monotonic()) + 1)
        return 5

    def check_retry_allowed(self, slot: EngineSlot) -> None:
        """EngineNotReady while a failed slot is inside its retry delay."""
        if time.monotonic() < slot.retry_at:
            raise EngineNotReady(
                # The first line only: a crash's last_error goes on with the engine log, which is for /status.
                f"model {slot.name!r} failed to start: {slot.last_error.partition(chr(10))[0]}",
                retry_after_s=max(1, int(slot.retry_at - time.monotonic())),
            )

    # ---- bring-up ----------------------------------------------------------------------------------------

    def begin_start(self, slot: EngineSlot) -> None:
        """Begin a cold start (does not wait for ready: await `slot.episode` for that)."""
        self._new_episode(slot)
        slot.state = EngineState.STARTING
        slot.stop_requested = False
        slot.generation += 1
        self._spawn_task(slot, self._run_start(slot, slot.generation), "start")

    def begin_wake(self, slot: EngineSlot) -> None:
        """Begin waking a sleeping vLLM engine; a failed wake falls back to a cold start."""
        self._new_episode(slot)
        slot.state = EngineState.STARTING
        slot.phase = "waking up"
        self._spawn_task(slot, self._run_wake(slot), "wake")

    async def try_sleep(self, slot: EngineSlot, meminfo_path: Path, reserve_mib: int) -> bool:
        """Put a ready vLLM engine with sleep mode to sleep (level 1) when host RAM allows; False when it may not
        or the sleep failed (the caller then stops it)."""
        process, model, spec = slot.process, slot.model, slot.spec
        if not (
            isinstance(model, VllmModel)
            and model.enable_sleep_mode
            and slot.state == EngineState.READY
            and spec is not None
            and process is not None
        ):
            return False
        refusal = sleep_refusal(model.memory_mib, host_available_mib(meminfo_path), reserve_mib)
        if refusal is not None:
            self.emit(slot, f"stopping instead of sleeping: {refusal}")
            return False
        slot.state = EngineState.STOPPING
        slot.phase = "going to sleep"
        slot.stop_requested = True  # an exit now is a stop's business, not a crash to restart
        self.emit(slot, "going to sleep (level 1) to free the GPU for its swap group")
        try:
            assert self.http is not None
            await sleep_engine(self.http, engine_root(spec.base_url), level=1)
        except EngineError as err:
            self.emit(slot, f"{err}; stopping it instead")
            return False
        if slot.process is not process or process.returncode is not None:
            return False
        slot.state = EngineState.SLEEPING
        slot.phase = "asleep (level 1: weights in host RAM)"
        slot.stop_requested = False
        self.emit(slot, "asleep")
        return True

    def _new_episode(self, slot: EngineSlot) -> None:
        if slot.episode is None or slot.episode.done():
            slot.episode = asyncio.get_running_loop().create_future()
            # A waiter may time out and go away; retrieve exceptions so none is reported as "never retrieved".
            slot.episode.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _spawn_task(self, slot: EngineSlot, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"{slot.name}-{name}")
        slot.tasks.add(task)
        task.add_done_callback(slot.tasks.discard)

    async def _run_start(self, slot: EngineSlot, generation: int) -> None:
        engine = self.engines[slot.model.engine]
        slot.phase = "preparing"
        if self.cluster and not await self.cluster.bring_up(self, slot):
            return
        spec = await self._launch_spec(slot, engine, generation)
        if spec is None or slot.generation != generation:
            return  # failed, or stopped (or started anew) while preparing: spawn nothing
        slot.spec = spec
        on_line = self._startup_watcher(slot, spec)
        process = EngineProcess(spec, logs_dir() / f"{file_stem(slot.name)}.log", on_line=on_line)
        slot.process = process
        self.emit(slot, f"starting (port {spec.port})")
        slot.phase = "loading"
        if not await self._spawn(slot, process, generation):
            return
        self._spawn_task(slot, self._watch_exit(slot, process), "watch")
        if self.cluster:
            self.cluster.watch(self, slot, process)
        await self._await_ready(slot, spec, process)

    async def _launch_spec(self, slot: EngineSlot, engine: Engine[Any, Any], generation: int) -> LaunchSpec | None:
        """The slot's launch on a free port, resolved once per slot; None (the slot failed) when it cannot be."""
        try:
            if slot.resolved is None:
                # Not resolved by `gpufleet serve` (an app built in-process): resolve now, once. It may probe
                # vLLM's version or assemble a GGUF (seconds): keep the event loop free.
                slot.resolved = await asyncio.to_thread(engine.resolve, slot.name, slot.model)
            return with_engine_key(engine.launch_spec(slot.name, slot.model, slot.resolved, free_port()))
        except GpufleetError as err:
            if slot.generation == generation:
                self.fail(slot, str(err), retry=False)
            return None

    def _startup_watcher(self, slot: EngineSlot, spec: LaunchSpec) -> Callable[[str], None] | None:
        """A log-line callback that turns vLLM's startup log into the slot's phase (None for other engines)."""
        if spec.log_phase_parser != "vllm":
            slot.startup_log = None
            return None
        startup = slot.startup_log = VllmStartupLog()

        def on_line(line: str) -> None:
            # vLLM's log tells where a 1–10 minute cold start is (seed 000/004) and why it failed.
            if startup.feed(line) and slot.state == EngineState.STARTING:
                slot.phase = startup.progress_line()
                self.emit(slot, slot.phase)

        return on_line

    async def _spawn(self, slot: EngineSlot, process: EngineProcess, generation: int) -> bool:
        """Start the process; False when it could not start (the slot failed) or is no longer wanted (ended)."""
        try:
            await process.spawn()
        except OSError as err:
            if slot.generation == generation:
                self.fail(slot, f"cannot start engine: {err}", retry=False)
            return False
        if slot.generation != generation or slot.process is not process:
            # A stop came in while it spawned (and found no process to stop): this one is ours to end.
            await process.stop(slot.model.stop_grace_s)
            return False
        return True

    async def _await_ready(self, slot: EngineSlot, spec: LaunchSpec, process: EngineProcess) -> None:
        """Poll the health URL until ready (mark it so), gone (not ours to handle) or timed out (fail and stop)."""
        assert self.http is not None
        waited = await wait_healthy(
            self.http,
            spec.health_url,
            deadline=time.monotonic() + slot.model.ready_timeout_s,
            interval_s=self.health_interval_s,
            # An exit is _watch_exit's to handle; a requested stop is the stopper's.
            gone=lambda: process.returncode is not None or slot.process is not process or slot.stop_requested,
        )
        if waited == HealthWait.HEALTHY:
            self.mark_ready(slot, f"ready in {time.monotonic() - process.started_at:.1f} s at {spec.base_url}")
            return
        if waited == HealthWait.GONE:
            return
        tail = process.log_tail()
        slot.stop_requested = True  # the exit that follows is ours, not a crash
        self.fail(
            slot,
            f"engine did not become ready within {slot.model.ready_timeout_s:.0f} s "
            f"(raise models.{slot.name}.ready_timeout_s if the model is just slow to load)",
            retry=False,
            log_tail=tail,
        )
        await process.stop(slot.model.stop_grace_s)

    async def _run_wake(self, slot: EngineSlot) -> None:
        process, spec = slot.process, slot.spec
        assert process is not None and spec is not None and self.http is not None
        self.emit(slot, "waking up")
        started = time.monotonic()
        try:
            await wake_engine(self.http, engine_root(spec.base_url))
        except EngineError as err:
            if slot.state != EngineState.STARTING or slot.process is not process:
                return
            self.emit(slot, f"{err}; cold-starting it instead")
            slot.stop_requested = True
            await process.stop(slot.model.stop_grace_s)
            slot.process = None  # its exit watcher must not take the restart below for a crash
            self.begin_start(slot)
            return
        if slot.state != EngineState.STARTING or slot.process is not process or process.returncode is not None:
            return
        slot.wakes += 1
        self.mark_ready(slot, f"awake in {time.monotonic() - started:.1f} s at {spec.base_url}")

    def mark_ready(self, slot: EngineSlot, message: str) -> None:
        """The engine answers: resolve the episode so waiting requests go through."""
        slot.state = EngineState.READY
        startup = slot.startup_log
        slot.phase = startup.progress_line() if startup and startup.phase >= Phase.KV_CACHE_ALLOCATED else "ready"
        if startup and startup.kv_cache and slot.spec:  # learn the planner's error on this host (issue 24)
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # never block a ready engine
                record_from_launch(slot.spec.extra, startup.kv_cache.tokens)
        slot.ready_at = time.monotonic()
        slot.last_used = time.monotonic()
        slot.last_error = ""
        self.emit(slot, message)
        if slot.episode and not slot.episode.done():
            slot.episode.set_result(None)

    # ---- failure and restart -------------------------------------------------------------------------------

    def fail(self, slot: EngineSlot, message: str, *, retry: bool, log_tail: str = "") -> None:
        """Restart with exponential backoff when `retry` and the restart policy allows, else mark it failed."""
        slot.failures += 1
        # /status (behind the API key) keeps the engine's log; a client's 503 gets only `message`.
        slot.last_error = f"{message}\n--- engine log (last lines) ---\n{log_tail}" if log_tail else message
        policy = slot.model.restart
        if retry and slot.failures <= policy.max_restarts and not self.closed:
            delay = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** (slot.failures - 1))
            slot.state = EngineState.BACKOFF
            slot.phase = f"restart in {delay:.0f} s"
            slot.retry_at = time.monotonic() + delay
            self.emit(slot, f"{message}; restarting in {delay:.1f} s (attempt {slot.failures})")
            self._spawn_task(slot, self._restart_after(slot, delay), "restart")
            return
        slot.state = EngineState.FAILED
        slot.phase = "failed"
        slot.retry_at = time.monotonic() + policy.backoff_max_s
        self.emit(slot, f"failed: {message}")
        if self.cluster:
            self._spawn_task(slot, self.cluster.release(slot.name), "ray-release")
        if slot.episode and not slot.episode.done():
            slot.episode.set_exception(EngineError(f"model {slot.name!r}: {message}", log_tail=log_tail))
        self._on_freed(slot)  # a failed member no longer holds its share of the GPU

    async def _restart_after(self, slot: EngineSlot, delay: float) -> None:
        await asyncio.sleep(delay)
        if slot.state == EngineState.BACKOFF and not self.closed:
            slot.restarts += 1
            self.begin_start(slot)

    async def _watch_exit(self, slot: EngineSlot, process: EngineProcess) -> None:
        code = await process.wait()
        if not slot.stop_requested:
            await process.reap_after_exit()  # an exit on its own: nothing of it may outlive it (stop() reaps the rest)
        if slot.process is process and slot.state == EngineState.SLEEPING and not self.closed:
            # It held no GPU memory; the next request for it cold-starts it through its group.
            slot.state = EngineState.STOPPED
            slot.phase = ""
            slot.last_error = f"engine exited with code {code} while asleep"
            self.emit(slot, slot.last_error)
            return
        if slot.process is not process or slot.stop_requested or self.closed:
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
            self.fail(
                slot, f"engine {what} with exit code {code}: {cause.cause}: {cause.hint}", retry=False, log_tail=tail
            )
            return
        if was == EngineState.READY:
            self._new_episode(slot)  # requests arriving during the restart wait for this one
        self.fail(slot, f"engine {what} with exit code {code}", retry=True, log_tail=tail)
        if slot.state == EngineState.FAILED:
            slot.last_error = f"engine {what} with exit code {code}; last log lines:\n{tail}"

    # ---- stop --------------------------------------------------------------------------------------------

    async def stop(self, slot: EngineSlot, final: EngineState) -> None:
        """SIGTERM (then SIGKILL after the model's grace period) and settle in `final`; waiters get a 503."""
        process = slot.process
        slot.stop_requested = True
        slot.generation += 1  # a start still preparing or spawning ends its own process (see _run_start)
        if process is None or process.returncode is not None:
            slot.state = final
            slot.phase = ""
            self._end_episode(slot)  # a start still preparing will not resolve it any more
            self._on_freed(slot)
            if self.cluster:
                await self.cluster.release(slot.name)  # e.g. stopped while its Ray head waited for workers
            return
        slot.state = EngineState.STOPPING
        self.emit(slot, "stopping")
        await process.stop(slot.model.stop_grace_s)
        if slot.process is process and slot.state == EngineState.STOPPING:  # not restarted meanwhile
            slot.state = final
            slot.phase = ""
        self._end_episode(slot)
        self.emit(slot, "stopped")
        self._on_freed(slot)
        if self.cluster:
            await self.cluster.release(slot.name)

    @staticmethod
    def _end_episode(slot: EngineSlot) -> None:
        if slot.episode and not slot.episode.done():
            slot.episode.set_exception(EngineNotReady(f"model {slot.name!r} was stopped", retry_after_s=1))

    async def wait_stopped(self, slot: EngineSlot) -> None:
        """Until a stop in progress has finished."""
        while slot.state == EngineState.STOPPING:
            await asyncio.sleep(0.05)
