"""Summary statistics of one benchmark run: pure functions over the per-request samples.

    summarize([RequestSample(...), ...], wall_s=12.5)  # -> RunStats with p50/p95/p99 of TTFT, ITL, latency

No I/O here: load.py measures, this module only counts, so every figure is tested with tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class RequestSample:
    """What one streamed request measured. Times are seconds from the request's start."""

    ok: bool
    ttft_s: float | None = None  # first content token (or first chunk with text)
    latency_s: float | None = None  # until the stream ended
    output_tokens: int = 0
    # Gaps between consecutive content chunks: a chunk carries about one token on llama.cpp, vLLM and
    # transformers serve, so these are the inter-token latencies a user sees.
    itl_s: tuple[float, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Distribution:
    """Mean and percentiles of one latency, in seconds; all None when there were no samples."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form."""
        return {"count": self.count, "mean": self.mean, "p50": self.p50, "p95": self.p95, "p99": self.p99}


@dataclass(frozen=True)
class RunStats:
    """One target at one concurrency: throughput, errors and latency distributions."""

    requests: int
    succeeded: int
    failed: int
    wall_s: float
    req_per_s: float
    output_tok_per_s: float
    output_tokens: int
    ttft: Distribution
    itl: Distribution
    latency: Distribution
    errors: dict[str, int] = field(default_factory=dict)  # message -> count


def percentile(values: Sequence[float], pct: float) -> float | None:
    """The pct-th percentile with linear interpolation between closest ranks (numpy's default); None if empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return None
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Sequence[float]) -> Distribution:
    """Mean and p50/p95/p99 of `values`."""
    if not values:
        return Distribution(0, None, None, None, None)
    p50, p95, p99 = (percentile(values, p) for p in PERCENTILES)
    return Distribution(len(values), sum(values) / len(values), p50, p95, p99)


def summarize(samples: Sequence[RequestSample], wall_s: float) -> RunStats:
    """Throughput and latency of one run; `wall_s` is from the first request's start to the last one's end.

    Rates count successful requests and their tokens only: a fast error is not throughput.
    """
    ok = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for sample in samples:
        if not sample.ok:
            key = sample.error or "unknown error"
            errors[key] = errors.get(key, 0) + 1
    tokens = sum(s.output_tokens for s in ok)
    rate = (lambda n: n / wall_s) if wall_s > 0 else (lambda n: 0.0)
    return RunStats(
        requests=len(samples),
        succeeded=len(ok),
        failed=len(samples) - len(ok),
        wall_s=wall_s,
        req_per_s=rate(len(ok)),
        output_tok_per_s=rate(tokens),
        output_tokens=tokens,
        ttft=distribution([s.ttft_s for s in ok if s.ttft_s is not None]),
        itl=distribution([gap for s in ok for gap in s.itl_s]),
        latency=distribution([s.latency_s for s in ok if s.latency_s is not None]),
        errors=errors,
    )


def cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sorted values and their cumulative fractions (1/n ... 1), what a CDF plot draws."""
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]
