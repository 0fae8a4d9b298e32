"""Run a benchmark: every target at every load level, one target at a time, and build the report.

    report = await run_bench(targets, prompts, settings, api_key=None, on_sample=bar.advance)

Targets run one after another, never together: on a shared host a second target's load would slow the first.
Each target gets one warm-up request first (it starts a cold engine behind the gateway), not counted. The
warm-up also settles two things before any figure is taken: a name the server does not know (HTTP 404) stops
the benchmark with the server's message, and an engine that refuses the fixed-output fields (HTTP 400/422)
is run without them, which the report says. Then the closed-loop levels (concurrency), then the open-loop
ones (rates).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import aiohttp

from gpufleet.bench.load import auth_headers, one_request, request_body, run_level
from gpufleet.bench.open_loop import run_rate
from gpufleet.bench.report import BenchReport, BenchSettings, TargetInfo, TargetRun
from gpufleet.bench.stats import RequestSample
from gpufleet.bench.targets import BenchTarget, direct_label
from gpufleet.errors import ConfigError

REQUESTS_PER_SLOT = 4  # default requests per closed-loop level: 4 x concurrency, so every worker sends several
RATE_WINDOW_S = 10  # default requests per open-loop level: 10 s of arrivals (rate x 10) ...
MIN_RATE_REQUESTS = 4  # ... and at least this many


def requests_for(settings: BenchSettings, concurrency: int) -> int:
    """How many requests one closed-loop level sends."""
    return settings.requests if settings.requests is not None else REQUESTS_PER_SLOT * concurrency


def requests_for_rate(settings: BenchSettings, rate: float) -> int:
    """How many requests one open-loop level sends."""
    if settings.requests is not None:
        return settings.requests
    return max(MIN_RATE_REQUESTS, math.ceil(rate * RATE_WINDOW_S))


def total_requests(settings: BenchSettings, targets: int) -> int:
    """Requests the whole benchmark sends, warm-ups included (for the progress bar)."""
    per_target = (
        1
        + sum(requests_for(settings, level) for level in settings.concurrency)
        + sum(requests_for_rate(settings, rate) for rate in settings.rates)
    )
    return targets * per_target


async def warm_up(
    target: BenchTarget, prompt: str, *, api_key: str | None, timeout_s: float, fixed_output: bool = False
) -> RequestSample:
    """One short request that waits out a cold start; its timing is not part of the results."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        body = request_body(target, prompt, max_tokens=4, seed=0, fixed_output=fixed_output)
        return await one_request(session, target, body, auth_headers(api_key))


def _status_of(sample: RequestSample) -> int | None:
    """The HTTP status of a failed sample ('HTTP 404: ...'), None when it failed otherwise."""
    text = sample.error or ""
    head = text.removeprefix("HTTP ").partition(":")[0]
    return int(head) if text.startswith("HTTP ") and head.isdigit() else None


async def settle(
    info: TargetInfo, prompt: str, settings: BenchSettings, *, api_key: str | None, timeout_s: float
) -> tuple[TargetInfo, RequestSample]:
    """Warm a target up and learn whether it takes the fixed-output fields; ConfigError for an unknown name."""
    target = info.target
    fixed = settings.fixed_output
    sample = await warm_up(target, prompt, api_key=api_key, timeout_s=timeout_s, fixed_output=fixed)
    note = None
    if fixed and _status_of(sample) in (400, 422):
        retry = await warm_up(target, prompt, api_key=api_key, timeout_s=timeout_s, fixed_output=False)
        if retry.ok:
            fixed, note = False, f"the engine refused ignore_eos/min_tokens ({sample.error}); natural lengths"
            sample = retry
    if _status_of(sample) == 404:
        where = "the gateway" if target.via_gateway else target.base_url
        raise ConfigError(f"target {target.label!r}: {where} does not serve {target.model!r} ({sample.error})")
    return dataclasses.replace(info, fixed_output=fixed, fixed_output_note=note), sample


async def engine_behind(target: BenchTarget, *, api_key: str | None, timeout_s: float) -> BenchTarget:
    """The engine-direct twin of a gateway target: starts the model (POST /admin/models/NAME/start) and
    returns a target at the engine URL the gateway answers with."""
    root = target.base_url.removesuffix("/v1")
    headers = auth_headers(api_key)
    url = f"{root}/admin/models/{target.model}/start"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url, headers=headers) as response,
        ):
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise ConfigError(
            f"--compare-direct: cannot ask the gateway at {root} for {target.model!r}'s engine"
            f" ({type(err).__name__}: {err})"
        ) from None
    engine_url = body.get("engine_url") if isinstance(body, dict) else None
    if response.status != 200 or not isinstance(engine_url, str):
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise ConfigError(
            f"--compare-direct: {target.model!r} has no local engine behind the gateway"
            f" (HTTP {response.status}: {message or body})"
        )
    engine_key = body.get("engine_api_key")
    return BenchTarget(
        direct_label(target),
        engine_url.rstrip("/"),
        target.model,
        via_gateway=False,
        api_key=engine_key if isinstance(engine_key, str) else None,
    )


async def run_bench(
    targets: Sequence[TargetInfo],
    prompts: Sequence[str],
    settings: BenchSettings,
    *,
    api_key: str | None = None,
    timeout_s: float = 600,
    on_sample: Callable[[RequestSample], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> BenchReport:
    """Measure every target at every load level of `settings` (the report's host/gpufleet fields are the
    caller's to fill)."""
    runs: list[TargetRun] = []
    settled: list[TargetInfo] = []
    by_label = {info.target.label: info.target for info in targets}
    stage = on_stage or (lambda text: None)
    for info in targets:
        if info.direct_of is not None and info.direct_of in by_label:
            # Ask for the engine again right before loading it: an engine the gateway unloaded (idle TTL, a
            # swap) while earlier targets ran comes back on another port with another key.
            fresh = await engine_behind(by_label[info.direct_of], api_key=api_key, timeout_s=timeout_s)
            info = dataclasses.replace(info, target=fresh)
        key = info.target.api_key or api_key  # an engine-direct target answers only to its engine's own key
        stage(f"{info.target.label}: warm-up")
        info, sample = await settle(info, prompts[0], settings, api_key=key, timeout_s=timeout_s)
        settled.append(info)
        if on_sample:
            on_sample(sample)
        load = _Load(prompts, settings, key, timeout_s, on_sample, stage)
        runs.extend([await _closed_loop(info, level, load) for level in settings.concurrency])
        runs.extend([await _open_loop(info, rate, load) for rate in settings.rates])
    return BenchReport(settings, tuple(settled), tuple(runs))


@dataclasses.dataclass(frozen=True)
class _Load:
    """What every load level of one target is sent with."""

    prompts: Sequence[str]
    settings: BenchSettings
    api_key: str | None
    timeout_s: float
    on_sample: Callable[[RequestSample], None] | None
    stage: Callable[[str], None]


async def _closed_loop(info: TargetInfo, level: int, load: _Load) -> TargetRun:
    """One closed-loop level: `level` workers, each sending its next request when the last one ends."""
    target, settings = info.target, load.settings
    load.stage(f"{target.label}: concurrency {level}")
    samples, wall_s = await run_level(
        target,
        load.prompts,
        concurrency=level,
        requests=requests_for(settings, level),
        max_tokens=settings.max_tokens,
        api_key=load.api_key,
        timeout_s=load.timeout_s,
        on_done=load.on_sample,
        seed_offset=settings.seed,
        fixed_output=info.fixed_output,
    )
    return TargetRun(target.label, level, tuple(samples), wall_s)


async def _open_loop(info: TargetInfo, rate: float, load: _Load) -> TargetRun:
    """One open-loop level: requests arrive at `rate` per second whether or not earlier ones finished."""
    target, settings = info.target, load.settings
    load.stage(f"{target.label}: {rate:g} requests/s")
    level_run = await run_rate(
        target,
        load.prompts,
        rate=rate,
        requests=requests_for_rate(settings, rate),
        max_tokens=settings.max_tokens,
        seed=settings.seed,
        api_key=load.api_key,
        timeout_s=load.timeout_s,
        on_done=load.on_sample,
        fixed_output=info.fixed_output,
    )
    return TargetRun(
        target.label,
        None,
        tuple(level_run.samples),
        level_run.wall_s,
        rate=rate,
        sent_per_s=level_run.sent_per_s,
        max_in_flight=level_run.max_in_flight,
    )
