"""How long an orchestrator waits for a vLLM engine to come up, from the model's cold start.

A vLLM server answers /health only once the weights are loaded (and CUDA graphs captured), so the startup
probe must outlive the whole cold start; after that a liveness probe restarts a hung server within seconds.
Seed 002 measured a first start of ~120 s on a 3060 (download + load) and ~20 s from the cache; seed 000
60-90 s for a 32B model; seed 004 5-10 minutes for 116 GB across two nodes. The config's
`ready_timeout_s` is that budget (the supervisor gives a local start the same time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PERIOD_S = 10  # how often the startup and liveness probes ask /health
LIVENESS_FAILURES = 3  # a serving engine that misses 30 s of /health is restarted
READINESS_PERIOD_S = 5
PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class ProbeTiming:
    """Probe settings of one engine: the startup budget and how it is counted."""

    startup_budget_s: int  # failure_threshold * period_s >= the cold start
    period_s: int
    startup_failure_threshold: int
    liveness_failures: int = LIVENESS_FAILURES
    readiness_period_s: int = READINESS_PERIOD_S
    timeout_s: int = PROBE_TIMEOUT_S


def probe_timing(cold_start_s: float, *, period_s: int = PERIOD_S) -> ProbeTiming:
    """Probes whose startup window covers `cold_start_s` (rounded up to whole periods).

    >>> probe_timing(180).startup_failure_threshold      # seed 002: 120 s first load + margin
    18
    """
    if cold_start_s <= 0 or period_s <= 0:
        raise ValueError(f"cold start and probe period must be positive (got {cold_start_s}, {period_s})")
    failures = math.ceil(cold_start_s / period_s)
    return ProbeTiming(startup_budget_s=failures * period_s, period_s=period_s, startup_failure_threshold=failures)
