"""Open-loop load: requests arrive at a set rate (Poisson arrivals, seeded) whatever the engine's pace.

    level = await run_rate(target, prompts, rate=2.0, requests=20, max_tokens=64, seed=0)
    level.samples, level.wall_s, level.sent_per_s, level.max_in_flight

The closed loop (load.run_level) waits for an answer before sending the next request, so a slow engine is
sent less; here a request is sent at each arrival time even when earlier ones have not ended, as real
clients do (GuideLLM's and `vllm bench serve --request-rate`'s Poisson mode). Gaps between arrivals are
exponential with mean 1/rate, drawn from `random.Random(seed)`: the same seed gives the same schedule, so
two targets see the same arrivals.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from gpufleet.bench.load import auth_headers, fresh_connections, one_request, request_body
from gpufleet.bench.stats import RequestSample
from gpufleet.bench.targets import BenchTarget


def arrival_times(rate: float, requests: int, seed: int) -> list[float]:
    """Send times in seconds from the start: the first at 0, then exponential gaps of mean 1/rate.

    >>> arrival_times(2.0, 3, seed=0)[0]
    0.0
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)
    times: list[float] = []
    at = 0.0
    for _ in range(requests):
        times.append(at)
        at += rng.expovariate(rate)
    return times


@dataclass(frozen=True)
class OpenLoopLevel:
    """One target at one offered rate: the samples and how the load was actually delivered."""

    samples: list[RequestSample]
    wall_s: float  # first send to last answer
    sent_per_s: float  # the rate requests actually left at (arrivals / span of the send times)
    max_in_flight: int  # the deepest backlog seen: above 1 the engine fell behind the arrivals at some point


async def run_rate(
    target: BenchTarget,
    prompts: Sequence[str],
    *,
    rate: float,
    requests: int,
    max_tokens: int,
    seed: int = 0,
    api_key: str | None = None,
    timeout_s: float = 600,
    on_done: Callable[[RequestSample], None] | None = None,
    fixed_output: bool = False,
) -> OpenLoopLevel:
    """`requests` requests sent at Poisson arrivals of `rate` per second (no cap on requests in flight)."""
    schedule = arrival_times(rate, requests, seed)
    headers = auth_headers(api_key)
    samples: list[RequestSample] = []
    in_flight = 0
    max_in_flight = 0

    async def send(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        body = request_body(
            target, prompts[index % len(prompts)], max_tokens=max_tokens, seed=seed + index, fixed_output=fixed_output
        )
        try:
            sample = await one_request(session, target, body, headers)
        finally:
            in_flight -= 1
        samples.append(sample)
        if on_done is not None:
            on_done(sample)

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # limit=0: no connection cap, so a backlog shows up as requests in flight rather than queued in the client.
    async with aiohttp.ClientSession(timeout=timeout, connector=fresh_connections(0)) as session:
        started = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        sent_at: list[float] = []
        for index, at in enumerate(schedule):
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at.append(time.perf_counter() - started)
            tasks.append(asyncio.create_task(send(session, index)))
        await asyncio.gather(*tasks)
        wall_s = time.perf_counter() - started
    span = sent_at[-1] - sent_at[0] if len(sent_at) > 1 else 0.0
    sent_per_s = (len(sent_at) - 1) / span if span > 0 else 0.0
    return OpenLoopLevel(samples, wall_s, sent_per_s, max_in_flight)
