"""A benchmark's results: the JSON report, the side-by-side table rows and the gateway's cost (pure).

report = BenchReport(settings, targets, runs)
report.as_dict()          # what --json writes and <cache>/bench/latest/report.json holds
table_rows(report.as_dict())
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpufleet.bench.load import FIXED_OUTPUT_PARAMS
from gpufleet.bench.stats import RequestSample, RunStats, summarize
from gpufleet.bench.targets import BenchTarget

REPORT_VERSION = 2  # 2: open-loop runs (mode, rate), fixed output lengths, host/engine/gpufleet metadata


@dataclass(frozen=True)
class BenchSettings:
    """How the load was shaped."""

    concurrency: tuple[int, ...]  # closed-loop levels (requests in flight); may be empty with rates
    requests: int | None  # per level; None = the runner's default for the level
    max_tokens: int
    prompts: int
    rates: tuple[float, ...] = ()  # open-loop levels (requests per second, Poisson arrivals)
    fixed_output: bool = True  # ask for exactly max_tokens output tokens (ignore_eos / min_tokens)
    seed: int = 0  # request seeds and the arrival schedule


@dataclass(frozen=True)
class TargetInfo:
    """A target as the report names it, with the planner's decode estimate when it has one."""

    target: BenchTarget
    direct_of: str | None = None  # the gateway target's label when this is its engine-direct twin
    planner_decode_tok_s: float | None = None
    planner_note: str | None = None  # why there is no estimate, when the target is a configured vLLM model
    engine: dict[str, Any] | None = None  # engine_info(): name, version, where they were read
    fixed_output: bool = False  # the fixed-output fields were sent (the engine accepted them)
    fixed_output_note: str | None = None  # why they were not, when they were asked for


@dataclass(frozen=True)
class TargetRun:
    """One target at one concurrency: its samples and their summary."""

    label: str
    concurrency: int | None  # closed loop; None for an open-loop run
    samples: tuple[RequestSample, ...]
    wall_s: float
    rate: float | None = None  # open loop: the offered rate (requests per second)
    sent_per_s: float | None = None  # open loop: the rate the requests actually left at
    max_in_flight: int | None = None  # open loop: the deepest backlog
    stats: RunStats = field(init=False)

    @property
    def mode(self) -> str:
        """'closed' (a concurrency level) or 'open' (a request rate)."""
        return "open" if self.rate is not None else "closed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stats", summarize(self.samples, self.wall_s))


def _r(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else round(value, digits)


def run_dict(run: TargetRun) -> dict[str, Any]:
    """JSON form of one run: the summary plus the raw latencies the CDF plots draw."""
    s = run.stats
    ok = [sample for sample in run.samples if sample.ok]
    lengths = [sample.output_tokens for sample in ok]
    return {
        "target": run.label,
        "mode": run.mode,
        "concurrency": run.concurrency,
        "rate": run.rate,
        "sent_per_s": _r(run.sent_per_s, 3),
        "max_in_flight": run.max_in_flight,
        "requests": s.requests,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "wall_s": _r(s.wall_s, 3),
        "req_per_s": _r(s.req_per_s, 3),
        "output_tok_per_s": _r(s.output_tok_per_s, 2),
        "output_tokens": s.output_tokens,
        # Equal min and max = every answer the same length (what fixed output asks for).
        "output_tokens_per_request": {"min": min(lengths, default=None), "max": max(lengths, default=None)},
        "ttft_s": {k: _r(v) if isinstance(v, float) else v for k, v in s.ttft.as_dict().items()},
        "itl_s": {k: _r(v) if isinstance(v, float) else v for k, v in s.itl.as_dict().items()},
        "latency_s": {k: _r(v) if isinstance(v, float) else v for k, v in s.latency.as_dict().items()},
        "errors": dict(s.errors),
        "samples": {
            "ttft_s": [_r(x.ttft_s) for x in ok if x.ttft_s is not None],
            "latency_s": [_r(x.latency_s) for x in ok if x.latency_s is not None],
            "itl_s": [_r(gap) for x in ok for gap in x.itl_s],
        },
    }


def level_of(run: dict[str, Any]) -> tuple[str, float]:
    """A run's load level as a sortable key: closed-loop levels first, by concurrency, then rates."""
    if run.get("mode") == "open":
        return "open", float(run["rate"])
    return "closed", float(run["concurrency"])


def level_text(run: dict[str, Any]) -> str:
    """'4' for concurrency 4, '2/s' for an open-loop rate of 2 requests per second."""
    mode, level = level_of(run)
    return f"{level:g}/s" if mode == "open" else str(int(level))


def gateway_overhead(runs: Sequence[dict[str, Any]], pairs: dict[str, str]) -> list[dict[str, Any]]:
    """The gateway's cost per load level: through-gateway minus direct. `pairs` maps gateway label -> direct label.

    Positive `ttft_p50_added_ms` / `latency_p50_added_ms` = the gateway made it slower; a
    `tok_per_s_ratio` below 1 = less throughput through the gateway.
    """
    by_key = {(run["target"], level_of(run)): run for run in runs}
    rows: list[dict[str, Any]] = []
    for gateway_label, direct in pairs.items():
        for (label, level), via in by_key.items():
            if label != gateway_label or (direct, level) not in by_key:
                continue
            raw = by_key[(direct, level)]

            def added_ms(metric: str, via: dict[str, Any] = via, raw: dict[str, Any] = raw) -> float | None:
                a, b = via[metric]["p50"], raw[metric]["p50"]
                return None if a is None or b is None else round((a - b) * 1000, 2)

            ratio = round(via["output_tok_per_s"] / raw["output_tok_per_s"], 3) if raw["output_tok_per_s"] else None
            rows.append(
                {
                    "target": gateway_label,
                    "direct": direct,
                    "mode": level[0],
                    "concurrency": via.get("concurrency"),
                    "rate": via.get("rate"),
                    "ttft_p50_added_ms": added_ms("ttft_s"),
                    "latency_p50_added_ms": added_ms("latency_s"),
                    "tok_per_s_ratio": ratio,
                }
            )
    return sorted(rows, key=lambda row: (row["target"], level_of(row)))


@dataclass(frozen=True)
class BenchReport:
    """Everything one `gpufleet bench` measured."""

    settings: BenchSettings
    targets: tuple[TargetInfo, ...]
    runs: tuple[TargetRun, ...]
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    host: dict[str, Any] | None = None  # host.host_info()
    gpufleet: dict[str, Any] | None = None  # host.gpufleet_build()

    def as_dict(self) -> dict[str, Any]:
        """The JSON report (schema: docs/bench.md)."""
        runs = [run_dict(run) for run in self.runs]
        pairs = {info.direct_of: info.target.label for info in self.targets if info.direct_of}
        return {
            "version": REPORT_VERSION,
            "created_at": self.created_at,
            "settings": {
                "concurrency": list(self.settings.concurrency),
                "rates": list(self.settings.rates),
                "requests": self.settings.requests,
                "max_tokens": self.settings.max_tokens,
                "prompts": self.settings.prompts,
                "fixed_output": self.settings.fixed_output,
                "seed": self.settings.seed,
            },
            "host": self.host,
            "gpufleet": self.gpufleet,
            "targets": [
                {
                    "label": info.target.label,
                    "base_url": info.target.base_url,
                    "model": info.target.model,
                    "via_gateway": info.target.via_gateway,
                    "direct_of": info.direct_of,
                    "planner_decode_tok_s": _r(info.planner_decode_tok_s, 1),
                    "planner_note": info.planner_note,
                    "engine": info.engine,
                    "output_length": {
                        "fixed": info.fixed_output,
                        "params": sorted(FIXED_OUTPUT_PARAMS) if info.fixed_output else [],
                        "note": info.fixed_output_note,
                    },
                }
                for info in self.targets
            ],
            "runs": runs,
            "gateway_overhead": gateway_overhead(runs, pairs),
        }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows of the side-by-side table: grouped by concurrency, targets in the order given.

    Columns: TABLE_COLUMNS.
    """
    order = {target["label"]: index for index, target in enumerate(report["targets"])}
    estimates = {t["label"]: t["planner_decode_tok_s"] for t in report["targets"]}
    rows: list[list[str]] = []
    for run in sorted(report["runs"], key=lambda r: (level_of(r), order.get(r["target"], 0))):
        estimate = estimates.get(run["target"])
        ttft, itl = run["ttft_s"], run["itl_s"]
        rows.append(
            [
                run["target"],
                level_text(run),
                f"{run['succeeded']}/{run['requests']}",
                f"{run['req_per_s']:.2f}",
                f"{run['output_tok_per_s']:.1f}",
                f"{_ms(ttft['p50'])} / {_ms(ttft['p95'])} / {_ms(ttft['p99'])}",
                f"{_ms(itl['p50'])} / {_ms(itl['p95'])} / {_ms(itl['p99'])}",
                "-" if estimate is None else f"{estimate:.0f}",
            ]
        )
    return rows


TABLE_COLUMNS = (
    "target",
    "load",
    "ok",
    "req/s",
    "out tok/s",
    "TTFT ms p50/p95/p99",
    "ITL ms p50/p95/p99",
    "planner tok/s",
)
