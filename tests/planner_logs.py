"""Real vLLM start-up logs (tests/data/planner_logs/fixtures.yaml) replayed through the planner.

Each fixture is one public post: the settings it ran with and the KV-cache tokens vLLM reported.
`planned_tokens` plans the same setup and `error` is (planned - reported) / reported.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from gpufleet.catalog import GIB, get_gpu, get_model
from gpufleet.planner import PlanRequest
from gpufleet.planner.fit import Plan, compute_plan
from gpufleet.planner.vllm_versions import is_v1_default

FIXTURES = Path(__file__).parent / "data" / "planner_logs" / "fixtures.yaml"
TOLERANCE = 0.05


@dataclass(frozen=True)
class LogFixture:
    """One public start-up log, reduced to what a plan needs."""

    id: str
    source: str
    raw: dict[str, Any]

    @property
    def reported_tokens(self) -> int:
        return int(self.raw["reported"]["kv_tokens"])

    @property
    def split(self) -> str:
        """'fit' (a constant was read off this source) or 'test' (none was)."""
        return str(self.raw["split"])

    @property
    def expect_miss(self) -> bool:
        return bool(self.raw.get("expect_miss", False))


def load_fixtures() -> list[LogFixture]:
    data = yaml.safe_load(FIXTURES.read_text())
    return [LogFixture(f["id"], f["source"], f) for f in data["fixtures"]]


def plan_for(fx: LogFixture) -> Plan:
    raw = fx.raw
    gpu = get_gpu(raw["gpu"])
    if "gpu_total_gib" in raw:  # the log prints the total: use it rather than the catalog's
        gpu = replace(gpu, usable_bytes=min(int(raw["gpu_total_gib"] * GIB), gpu.vram_bytes))
    model = get_model(raw["model"]).spec
    req = PlanRequest(
        model,
        gpu,
        quantization=raw.get("quantization"),
        tensor_parallel=raw.get("tensor_parallel", 1),
        pipeline_parallel=raw.get("pipeline_parallel", 1),
        nodes=raw.get("nodes"),
        gpu_memory_utilization=raw["gpu_memory_utilization"],
        context=raw["max_model_len"],
        enforce_eager=raw.get("enforce_eager", False),
        kv_cache_dtype=raw.get("kv_cache_dtype", "auto"),
        max_num_batched_tokens=raw.get("max_num_batched_tokens"),
        max_num_seqs=raw.get("max_num_seqs"),
        vllm_version=raw["vllm_version"],
        offline=raw.get("offline", False),
        pytorch_sampler=raw.get("pytorch_sampler", False),
        kv_connector=raw.get("kv_connector"),
        allow_yarn=True,
    )
    return compute_plan(req)


def planned_tokens(fx: LogFixture) -> int:
    return plan_for(fx).kv_cache_tokens


def error(fx: LogFixture) -> float:
    """Relative error of the planned KV tokens; a reported 0 (no room) must be planned as 0."""
    planned = planned_tokens(fx)
    if fx.reported_tokens == 0:
        return 0.0 if planned == 0 else float("inf")
    return (planned - fx.reported_tokens) / fx.reported_tokens


def in_band(fx: LogFixture) -> bool:
    """vLLM's reported tokens lie inside the plan's band (an open low end counts as holding it)."""
    band = plan_for(fx).band
    assert band is not None
    low = band.kv_cache_tokens_low if band.kv_cache_tokens_low is not None else 0
    return low <= fx.reported_tokens <= band.kv_cache_tokens_high


def half_width(fx: LogFixture) -> float | None:
    """(high - low) / 2 / planned, or None for an open band (upper-bound plans) or a planned 0."""
    p = plan_for(fx)
    band = p.band
    assert band is not None
    if band.kv_cache_tokens_low is None or p.kv_cache_tokens == 0:
        return None
    return (band.kv_cache_tokens_high - band.kv_cache_tokens_low) / 2 / p.kv_cache_tokens


def is_v0(fx: LogFixture) -> bool:
    """The log is from the V0 engine (vLLM < 0.8), which band.py gives its own low end."""
    return not is_v1_default(fx.raw["vllm_version"])


def loso_band_coverage(test_set: list[LogFixture], fit_set: list[LogFixture]) -> tuple[int, int]:
    """(held, total): each test source held out of the band's sizing in turn.

    The band is re-sized without the held-out source, as band.py sizes it: the low end from the worst
    over-prediction among the other logs of the same engine (V0 or V1) whose plans have a low end, the
    high end from the worst under-prediction among all other logs; the fitting set always counts.
    A planned 0 or an open (upper-bound) low end counts as held on that side, as `in_band` counts it.
    """
    below: dict[str, float] = {}  # fixture id -> 1 - real/planned, for plans with a low end
    above: dict[str, float] = {}  # fixture id -> real/planned - 1, for every plan
    for fx in [*test_set, *fit_set]:
        plan = plan_for(fx)
        assert plan.band is not None
        if plan.kv_cache_tokens == 0:
            continue
        above[fx.id] = fx.reported_tokens / plan.kv_cache_tokens - 1
        if plan.band.kv_cache_tokens_low is not None:
            below[fx.id] = 1 - fx.reported_tokens / plan.kv_cache_tokens
    held = 0
    for fx in test_set:
        others = [o for o in [*test_set, *fit_set] if o.source != fx.source and o.id in above]
        if fx.id not in above:
            held += 1
            continue
        width_above = max([0.0, *(above[o.id] for o in others)])
        width_below = max([0.0, *(below[o.id] for o in others if o.id in below and is_v0(o) == is_v0(fx))])
        plan = plan_for(fx)
        high = plan.kv_cache_tokens * (1 + width_above)
        low = 0.0 if fx.id not in below else plan.kv_cache_tokens * (1 - width_below)
        if low <= fx.reported_tokens <= high:
            held += 1
    return held, len(test_set)
