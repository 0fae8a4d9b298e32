"""What the supervisor asks its own engines over HTTP: "are you up yet?" while starting, and their /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable

import aiohttp

from gpufleet.engines.vllm_metrics import VllmMetrics, parse_vllm_metrics
from gpufleet.errors import GpufleetError

log = logging.getLogger("gpufleet.engine_supervisor")


class HealthWait(enum.StrEnum):
    """How waiting for an engine's health URL ended."""

    HEALTHY = "healthy"
    GONE = "gone"  # the process exited or a stop was requested: someone else handles that
    TIMED_OUT = "timed_out"


async def wait_healthy(
    http: aiohttp.ClientSession, health_url: str, *, deadline: float, interval_s: float, gone: Callable[[], bool]
) -> HealthWait:
    """Poll `health_url` until it answers 200, `gone()` turns true, or `deadline` (monotonic) passes."""
    while time.monotonic() < deadline:
        if gone():
            return HealthWait.GONE
        # Refused connections and timeouts are what a loading engine answers: keep polling.
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
            async with http.get(health_url) as resp:
                if resp.status == 200:
                    return HealthWait.HEALTHY
        await asyncio.sleep(interval_s)
    return HealthWait.TIMED_OUT


async def scrape_vllm_metrics(http: aiohttp.ClientSession, metrics_url: str, name: str) -> VllmMetrics | None:
    """One scrape of a vLLM engine's /metrics; None when it failed (logged at debug: it is retried next round)."""
    try:
        async with http.get(metrics_url) as resp:
            text = await resp.text()
        return parse_vllm_metrics(text, model_name=name, source=metrics_url)
    except (aiohttp.ClientError, TimeoutError, OSError, GpufleetError) as err:
        log.debug("%s: metrics scrape failed: %s", name, err)
        return None
