"""Run a benchmark: every target at every concurrency, one target at a time, and build the report.

    report = await run_bench(targets, prompts, settings, api_key=None, on_sample=bar.advance)

Targets run one after another, never together: on a shared host a second target's load would slow the first.
Each target gets one warm-up request first (it starts a cold engine behind the gateway), not counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aiohttp

from gpufleet.bench.load import one_request, request_body, run_level
from gpufleet.bench.report import BenchReport, BenchSettings, TargetInfo, TargetRun
from gpufleet.bench.stats import RequestSample
from gpufleet.bench.targets import BenchTarget, direct_label
from gpufleet.errors import ConfigError

REQUESTS_PER_SLOT = 4  # default requests per level: 4 x concurrency, so every worker sends several


def requests_for(settings: BenchSettings, concurrency: int) -> int:
    """How many requests one level sends."""
    return settings.requests if settings.requests is not None else REQUESTS_PER_SLOT * concurrency


def total_requests(settings: BenchSettings, targets: int) -> int:
    """Requests the whole benchmark sends, warm-ups included (for the progress bar)."""
    return targets * (1 + sum(requests_for(settings, level) for level in settings.concurrency))


async def warm_up(target: BenchTarget, prompt: str, *, api_key: str | None, timeout_s: float) -> RequestSample:
    """One short request that waits out a cold start; its timing is not part of the results."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        return await one_request(session, target, request_body(target, prompt, max_tokens=4, seed=0), headers)


async def engine_behind(target: BenchTarget, *, api_key: str | None, timeout_s: float) -> BenchTarget:
    """The engine-direct twin of a gateway target: starts the model (POST /admin/models/NAME/start) and
    returns a target at the engine URL the gateway answers with."""
    root = target.base_url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = f"{root}/admin/models/{target.model}/start"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session, \
                session.post(url, headers=headers) as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise ConfigError(f"--compare-direct: cannot ask the gateway at {root} for {target.model!r}'s engine"
                          f" ({type(err).__name__}: {err})") from None
    engine_url = body.get("engine_url") if isinstance(body, dict) else None
    if response.status != 200 or not isinstance(engine_url, str):
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise ConfigError(f"--compare-direct: {target.model!r} has no local engine behind the gateway"
                          f" (HTTP {response.status}: {message or body})")
    engine_key = body.get("engine_api_key")
    return BenchTarget(direct_label(target), engine_url.rstrip("/"), target.model, via_gateway=False,
                       api_key=engine_key if isinstance(engine_key, str) else None)


async def run_bench(targets: Sequence[TargetInfo], prompts: Sequence[str], settings: BenchSettings, *,
                    api_key: str | None = None, timeout_s: float = 600,
                    on_sample: Callable[[RequestSample], None] | None = None,
                    on_stage: Callable[[str], None] | None = None) -> BenchReport:
    """Measure every target at every concurrency level of `settings`."""
    runs: list[TargetRun] = []
    for info in targets:
        target = info.target
        key = target.api_key or api_key  # an engine-direct target answers only to its engine's own key
        if on_stage:
            on_stage(f"{target.label}: warm-up")
        sample = await warm_up(target, prompts[0], api_key=key, timeout_s=timeout_s)
        if on_sample:
            on_sample(sample)
        for level in settings.concurrency:
            if on_stage:
                on_stage(f"{target.label}: concurrency {level}")
            samples, wall_s = await run_level(target, prompts, concurrency=level,
                                              requests=requests_for(settings, level),
                                              max_tokens=settings.max_tokens, api_key=key,
                                              timeout_s=timeout_s, on_done=on_sample)
            runs.append(TargetRun(target.label, level, tuple(samples), wall_s))
    return BenchReport(settings, tuple(targets), tuple(runs))
