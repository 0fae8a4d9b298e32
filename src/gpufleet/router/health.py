"""Per-target health as the router sees it: in-flight requests, consecutive failures, cooldown.

A target that fails `failures_before_cooldown` times in a row (connection refused, timeouts, 5xx, 429,
engine not ready, a dropped connection, a cut or malformed answer; also a stream that broke after its first
byte, which is not retried but still counts) is skipped for `cooldown_s`. What does not count: the client's
own errors (4xx), an engine still starting (a cold standby), a stale kept-alive connection
(router/fallback.py decides which). Remote targets in cooldown are probed (`GET {base_url}/models`)
every `probe_interval_s`; a successful probe ends the cooldown early. When the
cooldown runs out without a probe, the next request tries the target again (half-open): one success
clears it, one failure cools it down again. Managed (local) targets are not probed: the supervisor owns
their lifecycle, so their cooldown just expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpufleet.config import RouterConfig
from gpufleet.router.table import Target

log = logging.getLogger("gpufleet.router")

Prober = Callable[[Target], Any]  # async: True when the target answers


@dataclass
class TargetHealth:
    """What the router knows about one target."""

    target: Target
    in_flight: int = 0
    failures: int = 0  # consecutive
    cooldown_until: float = 0.0  # monotonic; 0 = not cooling down
    cooldowns: int = 0
    served: int = 0
    last_error: str = ""

    def available(self, now: float) -> bool:
        """Not in cooldown (a target whose cooldown ran out is tried again)."""
        return now >= self.cooldown_until

    def snapshot(self, now: float) -> dict[str, Any]:
        remaining = self.cooldown_until - now
        return {
            "target": self.target.label,
            "model": self.target.model,
            "healthy": remaining <= 0,
            "cooldown_until_s": round(remaining, 3) if remaining > 0 else None,
            "in_flight": self.in_flight,
            "failures": self.failures,
            "cooldowns": self.cooldowns,
            "served": self.served,
            "last_error": self.last_error,
        }


class HealthBoard:
    """Health of every target, keyed by model name (each configured model is one target)."""

    def __init__(
        self, targets: dict[str, Target], settings: RouterConfig, on_cooldown: Callable[[Target], None] | None = None
    ) -> None:
        self._settings = settings
        self._health = {name: TargetHealth(target) for name, target in targets.items()}
        self._on_cooldown = on_cooldown
        self._probe_task: asyncio.Task[None] | None = None

    def __getitem__(self, model: str) -> TargetHealth:
        return self._health[model]

    def begin(self, target: Target) -> None:
        self._health[target.model].in_flight += 1

    def end(self, target: Target) -> None:
        self._health[target.model].in_flight -= 1

    def success(self, target: Target) -> None:
        health = self._health[target.model]
        health.failures = 0
        health.cooldown_until = 0.0
        health.served += 1

    def failure(self, target: Target, reason: str) -> None:
        """Count a failure; enough in a row put the target in cooldown."""
        health = self._health[target.model]
        health.failures += 1
        health.last_error = reason[:300]
        if health.failures >= self._settings.failures_before_cooldown and self._settings.cooldown_s > 0:
            health.cooldown_until = time.monotonic() + self._settings.cooldown_s
            health.cooldowns += 1
            log.warning("target %s in cooldown for %.0f s: %s", target.label, self._settings.cooldown_s, reason)
            if self._on_cooldown is not None:
                self._on_cooldown(target)

    def retry_after_s(self, targets: list[Target]) -> int:
        """Whole seconds until the first of `targets` leaves cooldown (at least 1): a Retry-After for a 429."""
        now = time.monotonic()
        waits = [self._health[t.model].cooldown_until - now for t in targets]
        cooling = [w for w in waits if w > 0]
        return max(1, math.ceil(min(cooling))) if len(cooling) == len(waits) else 1

    def snapshot(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [health.snapshot(now) for health in self._health.values()]

    def start_probing(self, probe: Prober) -> None:
        """Probe remote targets in cooldown in the background (call from the event loop)."""
        if any(h.target.remote is not None for h in self._health.values()):
            self._probe_task = asyncio.create_task(self._probe_loop(probe), name="gpufleet-router-probe")

    async def stop_probing(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task

    async def _probe_loop(self, probe: Prober) -> None:
        while True:
            await asyncio.sleep(self._settings.probe_interval_s)
            now = time.monotonic()
            for health in self._health.values():
                if health.target.remote is None or health.available(now):
                    continue
                try:
                    ok = await probe(health.target)
                except Exception as err:  # a probe must never kill the loop
                    ok = False
                    log.debug("probe of %s failed: %s", health.target.label, err)
                if ok:
                    log.info("target %s answers again; cooldown ended", health.target.label)
                    health.cooldown_until = 0.0
                    health.failures = 0
