"""Swap groups: models that share one GPU take turns on it.

A group is exclusive (one member up at a time) unless `swap_groups.<name>.memory_mib` gives it a budget; then
members declare `memory_mib` and several may be up while their sum fits. A member that is starting, ready, in
crash backoff or stopping holds its share; a stopped, failed or sleeping one does not (vLLM sleep level 1 moves
the weights to host RAM and drops the KV cache, so the GPU memory is free).

Policy (what `SwapGroup` does; `plan_swap` is the pure part):

1. **Arrival order, bounded queue.** A request for a member that is up goes straight through while nobody is
   queued. Otherwise it joins the group's FIFO queue; beyond `max_queue` waiting requests it gets HTTP 503 with
   Retry-After. A request that arrives while others are queued queues too, even for a member that is up, so a
   busy resident model cannot starve a waiting one.
2. **No swap while busy.** Room is made only from idle members (no in-flight request), least recently used first,
   and only when enough idle members exist to fit the head of the queue; otherwise the head waits for in-flight
   requests to drain. Nothing is freed for a plan that cannot complete yet.
3. **Free = sleep or stop.** A ready vLLM member with `enable_sleep_mode` is put to sleep (level 1) when host RAM
   (MemAvailable in /proc/meminfo) holds its `memory_mib` with a reserve to spare; otherwise, or when sleep fails,
   it is stopped. A sleeping member is woken with `/wake_up` instead of a cold start (a failed wake cold-starts).
4. **Anti-thrash: a swapped-in model serves its whole queue.** When a member comes up, every queued request for it
   is admitted at once, wherever it stood in the queue; those requests count as in flight, so the member keeps the
   GPU until all of them are done (its minimum residency). Under mixed load the group therefore serves batches
   (all of A's waiting requests, then all of B's, ...) and swaps at most once per batch, never once per request.
5. One swap at a time per group; while it runs, everything else for the group queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from gpufleet.config import SwapGroupConfig
from gpufleet.errors import EngineError, EngineNotReady, GpufleetError

_QUEUE_FULL_RETRY_S = 5


class Occupancy(enum.StrEnum):
    """What a member holds of its group's GPU."""

    UP = "up"  # starting, ready or in crash backoff: requests may be admitted to it
    LEAVING = "leaving"  # stopping or going to sleep: still holds memory, takes no requests
    OFF = "off"  # stopped, failed or sleeping


@dataclass(frozen=True)
class Member:
    """A member as the policy sees it."""

    name: str
    occupancy: Occupancy
    share: int  # memory_mib in a budgeted group; 1 in an exclusive one
    in_flight: int
    last_used: float


@dataclass(frozen=True)
class SwapPlan:
    """What bringing a member up needs: idle members to free (least recently used first), or to wait."""

    victims: tuple[str, ...] = ()
    wait: bool = False


def plan_swap(target: str, members: Sequence[Member], budget: int) -> SwapPlan:
    """Which idle members to free so `target` fits in `budget`, or `wait` while busy ones hold the room.

    >>> a = Member("a", Occupancy.UP, 1, 0, 1.0)
    >>> plan_swap("b", [a, Member("b", Occupancy.OFF, 1, 0, 0.0)], 1)
    SwapPlan(victims=('a',), wait=False)
    """
    by_name = {m.name: m for m in members}
    wanted = by_name[target]
    if wanted.occupancy is Occupancy.UP:
        return SwapPlan()
    if wanted.occupancy is Occupancy.LEAVING:
        return SwapPlan(wait=True)  # it comes back once it has left
    others = [m for m in members if m.name != target]
    room = budget - sum(m.share for m in others if m.occupancy is not Occupancy.OFF)
    if wanted.share <= room:
        return SwapPlan()
    victims: list[str] = []
    for m in sorted((m for m in others if m.occupancy is Occupancy.UP and m.in_flight == 0), key=lambda m: m.last_used):
        victims.append(m.name)
        room += m.share
        if wanted.share <= room:
            return SwapPlan(victims=tuple(victims))
    return SwapPlan(wait=True)


@dataclass(frozen=True)
class Freed:
    """A member freed to make room, and how ("slept" or "stopped")."""

    model: str
    how: str


@dataclass
class _Waiter:
    model: str
    future: asyncio.Future[list[Freed]]
    since: float = field(default_factory=time.monotonic)


@dataclass
class GroupHooks:
    """What the coordinator asks of the supervisor (which owns the processes)."""

    members: Callable[[], list[Member]]
    reserve: Callable[[str], None]  # count one admitted request as in flight (before the caller resumes)
    release: Callable[[str], None]  # one admitted request ended (the supervisor then calls pump)
    free: Callable[[str], Awaitable[str]]  # sleep or stop an idle member; returns "slept" or "stopped"
    bring_up: Callable[[str], None]  # begin a cold start or a wake; raises EngineNotReady when it may not start
    # Raises EngineNotReady when the member may not start now (failed, inside its retry delay): checked before
    # anyone is freed for it, so a model that cannot come up does not evict one that serves.
    check_start: Callable[[str], None]


class SwapGroup:
    """Queue and swap coordinator of one group; runs on the supervisor's event loop, no locks."""

    def __init__(self, name: str, config: SwapGroupConfig, member_names: Sequence[str], hooks: GroupHooks) -> None:
        self.name = name
        self.config = config
        self.member_names = list(member_names)
        self.hooks = hooks
        self.queue: deque[_Waiter] = deque()
        self.swaps = 0  # bring-ups that had to free another member
        self.last_freed: list[Freed] = []
        self._swapping: asyncio.Task[None] | None = None

    @property
    def budget(self) -> int:
        return self.config.memory_mib if self.config.memory_mib is not None else 1

    def queued_for(self, model: str) -> int:
        return sum(1 for w in self.queue if w.model == model)

    def _member(self, model: str) -> Member:
        return next(m for m in self.hooks.members() if m.name == model)

    async def admit(self, model: str, timeout_s: float) -> list[Freed]:
        """Wait for `model`'s turn; on return one request is counted in flight (the caller must release it)."""
        if self._swapping is None and not self.queue:
            member = self._member(model)
            if member.occupancy is Occupancy.UP:
                self.hooks.reserve(model)
                return []
            plan = plan_swap(model, self.hooks.members(), self.budget)
            if not plan.wait and not plan.victims:
                self.hooks.bring_up(model)
                self.hooks.reserve(model)
                return []
        if len(self.queue) >= self.config.max_queue:
            raise EngineNotReady(
                f"model {model!r}: swap group {self.name!r} already has {len(self.queue)} requests waiting for a "
                f"swap (max_queue {self.config.max_queue}); retry later",
                retry_after_s=_QUEUE_FULL_RETRY_S,
            )
        waiter = _Waiter(model, asyncio.get_running_loop().create_future())
        self.queue.append(waiter)
        self.pump()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout=timeout_s)
        except (TimeoutError, asyncio.CancelledError) as err:
            self._abandon(waiter)
            if isinstance(err, TimeoutError):
                busy = [m.name for m in self.hooks.members() if m.in_flight and m.name != model]
                raise EngineNotReady(
                    f"model {model!r} waited {timeout_s:.0f} s for swap group {self.name!r}"
                    + (f" (busy: {', '.join(busy)})" if busy else ""),
                    retry_after_s=_QUEUE_FULL_RETRY_S,
                ) from None
            raise

    def preload(self, model: str) -> bool:
        """Bring `model` up at gateway start if it fits without freeing anyone; False when the group is full."""
        if self._swapping is not None or self.queue:
            return False
        plan = plan_swap(model, self.hooks.members(), self.budget)
        if plan.wait or plan.victims:
            return False
        self.hooks.bring_up(model)
        return True

    def _abandon(self, waiter: _Waiter) -> None:
        future = waiter.future
        if future.done() and not future.cancelled() and future.exception() is None:
            self.hooks.release(waiter.model)  # admitted just as the caller gave up: hand the reservation back
        else:
            future.cancel()
            with contextlib.suppress(ValueError):
                self.queue.remove(waiter)
        self.pump()

    def pump(self) -> None:
        """Admit what can go now, in arrival order; start a swap for the head of the queue when room can be made."""
        while self.queue and self._swapping is None:
            head = self.queue[0]
            members = self.hooks.members()
            plan = plan_swap(head.model, members, self.budget)
            if plan.wait:
                return
            if not plan.victims:
                member = next(m for m in members if m.name == head.model)
                if member.occupancy is not Occupancy.UP:
                    try:
                        self.hooks.bring_up(head.model)
                    except GpufleetError as err:
                        self._fail_waiters(head.model, err)
                        continue
                self._admit_all(head.model, [])
                continue
            try:
                self.hooks.check_start(head.model)
            except GpufleetError as err:
                self._fail_waiters(head.model, err)
                continue
            self._swapping = asyncio.create_task(
                self._swap(head.model, plan.victims), name=f"swap-{self.name}-{head.model}"
            )
            return

    def _admit_all(self, model: str, freed: list[Freed]) -> None:
        for waiter in [w for w in self.queue if w.model == model]:
            self.queue.remove(waiter)
            if not waiter.future.done():
                self.hooks.reserve(model)
                waiter.future.set_result(freed)

    def _fail_waiters(self, model: str, err: GpufleetError) -> None:
        for waiter in [w for w in self.queue if w.model == model]:
            self.queue.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(err)

    async def _swap(self, target: str, victims: tuple[str, ...]) -> None:
        freed: list[Freed] = []
        try:
            for victim in victims:
                freed.append(Freed(victim, await self.hooks.free(victim)))
            self.hooks.bring_up(target)
        except GpufleetError as err:
            self._swapping = None
            self._fail_waiters(target, err)
            self.pump()
            return
        except Exception as err:  # a bug, not a refusal: the waiters hear of it instead of timing out
            self._swapping = None
            self._fail_waiters(target, EngineError(f"swap to {target!r} in group {self.name!r} failed: {err!r}"))
            raise
        except asyncio.CancelledError:
            self._swapping = None
            raise
        self._swapping = None
        self.swaps += 1
        self.last_freed = freed
        self._admit_all(target, freed)
        self.pump()

    def snapshot(self) -> dict[str, object]:
        """A JSON-able view for /status."""
        members = self.hooks.members()
        return {
            "budget_mib": self.config.memory_mib,
            "used_mib": (
                sum(m.share for m in members if m.occupancy is not Occupancy.OFF)
                if self.config.memory_mib is not None
                else None
            ),
            "max_queue": self.config.max_queue,
            "queued": len(self.queue),
            "swapping": self._swapping is not None,
            "swaps": self.swaps,
            "up": [m.name for m in members if m.occupancy is Occupancy.UP],
            "last_freed": [{"model": f.model, "how": f.how} for f in self.last_freed],
        }

    async def close(self) -> None:
        if self._swapping is not None:
            self._swapping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._swapping
        for waiter in self.queue:
            if not waiter.future.done():
                waiter.future.set_exception(EngineNotReady(f"swap group {self.name!r} is shutting down"))
        self.queue.clear()
