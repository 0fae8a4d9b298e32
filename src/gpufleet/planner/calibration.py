"""Learn from launches: what vLLM really allotted on this host, and how plans use it (issue 24).

When gpufleet runs vLLM it reads "GPU KV cache size: N tokens" from the log. A `Measurement` keeps
that figure next to what the plan said, under the launch's `LaunchKey` (GPU, model, checkpoint, vLLM
version and every setting that moves the figure). `calibrate` then uses it: the same launch gets the
measured figure ("measured here"); a similar one (same GPU, model, checkpoint, vLLM minor version,
TP/PP and KV dtype, other settings differing) gets the plan scaled by what similar launches measured.
Pure: the file that stores measurements is planner/calibration_file.py.

    >>> from gpufleet.catalog import get_gpu, get_model
    >>> from gpufleet.planner import plan_model
    >>> p = plan_model(get_model("qwen3-8b").spec, get_gpu("h100"), context=8192)
    >>> m = Measurement(launch_key(p), p.kv_cache_tokens, 400_000, "2026-12-07T00:00:00Z")
    >>> calibrate(p, [m]).kv_cache_tokens, calibrate(p, [m]).calibration.kind
    (400000, 'measured')
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, replace
from typing import Any

from gpufleet.planner.band import kv_band
from gpufleet.planner.blocks import max_concurrency
from gpufleet.planner.types import Calibration, Plan
from gpufleet.planner.vllm_versions import version_tuple


@dataclass(frozen=True)
class LaunchKey:
    """What a launch's KV figure depends on; two launches with equal keys should log the same figure."""

    gpu: str
    model: str
    checkpoint: str
    vllm_version: str
    tensor_parallel: int
    pipeline_parallel: int
    gpu_memory_utilization: float
    max_model_len: int
    kv_cache_dtype: str
    enforce_eager: bool
    max_num_batched_tokens: int
    max_num_seqs: int

    def similar_to(self, other: LaunchKey) -> bool:
        """Same hardware, weights, vLLM minor version, parallelism and KV dtype; other settings may differ."""
        return (
            self.gpu == other.gpu
            and self.model == other.model
            and self.checkpoint == other.checkpoint
            and version_tuple(self.vllm_version)[:2] == version_tuple(other.vllm_version)[:2]
            and (self.tensor_parallel, self.pipeline_parallel) == (other.tensor_parallel, other.pipeline_parallel)
            and self.kv_cache_dtype == other.kv_cache_dtype
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaunchKey:
        """Build from a stored dict; KeyError/TypeError/ValueError on a malformed one."""
        return cls(
            gpu=str(data["gpu"]),
            model=str(data["model"]),
            checkpoint=str(data["checkpoint"]),
            vllm_version=str(data["vllm_version"]),
            tensor_parallel=int(data["tensor_parallel"]),
            pipeline_parallel=int(data["pipeline_parallel"]),
            gpu_memory_utilization=float(data["gpu_memory_utilization"]),
            max_model_len=int(data["max_model_len"]),
            kv_cache_dtype=str(data["kv_cache_dtype"]),
            enforce_eager=bool(data["enforce_eager"]),
            max_num_batched_tokens=int(data["max_num_batched_tokens"]),
            max_num_seqs=int(data["max_num_seqs"]),
        )


def launch_key(plan: Plan) -> LaunchKey:
    """The key of the launch `plan` describes."""
    req = plan.request
    return LaunchKey(
        gpu=plan.device,
        model=plan.model.name,
        checkpoint=plan.variant.repo,
        vllm_version=req.vllm_version,
        tensor_parallel=plan.tensor_parallel,
        pipeline_parallel=plan.pipeline_parallel,
        gpu_memory_utilization=req.gpu_memory_utilization,
        max_model_len=plan.context,
        kv_cache_dtype=req.kv_cache_dtype,
        enforce_eager=plan.enforce_eager,
        max_num_batched_tokens=plan.max_num_batched_tokens,
        max_num_seqs=plan.max_num_seqs,
    )


@dataclass(frozen=True)
class Measurement:
    """One launch on this host: the plan's KV tokens and the ones vLLM logged."""

    key: LaunchKey
    planned_tokens: int
    measured_tokens: int
    recorded_at: str  # ISO 8601, UTC

    @property
    def error(self) -> float | None:
        """(planned - measured) / measured, the sign convention of docs/planner.md; None when measured is 0."""
        if self.measured_tokens <= 0:
            return None
        return (self.planned_tokens - self.measured_tokens) / self.measured_tokens


def calibrate(plan: Plan, measurements: list[Measurement]) -> Plan:
    """`plan` with the figure measured on this host, or corrected by similar launches; unchanged otherwise."""
    if plan.band is None or plan.kv_cache_tokens <= 0:
        return plan  # CPU backend (exact already) or nothing fits: nothing to calibrate
    key = launch_key(plan)
    same = [m for m in measurements if m.key == key]
    if same:
        latest = max(same, key=lambda m: m.recorded_at)
        note = f"measured here: vLLM logged {latest.measured_tokens:,} tokens for this launch ({latest.recorded_at})"
        return _with_tokens(plan, latest.measured_tokens, Calibration("measured", plan.kv_cache_tokens, 1.0, 1, note))
    similar = [m for m in measurements if m.key.similar_to(key) and m.planned_tokens > 0 and m.measured_tokens > 0]
    if not similar:
        return plan
    factor = statistics.median(m.measured_tokens / m.planned_tokens for m in similar)
    tokens = int(plan.kv_cache_tokens * factor) // plan.block_size * plan.block_size
    note = (
        f"corrected by {factor - 1:+.1%}: {len(similar)} similar launch(es) on this host logged that much "
        f"{'more' if factor >= 1 else 'less'} than planned"
    )
    return _with_tokens(plan, tokens, Calibration("corrected", plan.kv_cache_tokens, factor, len(similar), note))


def _with_tokens(plan: Plan, tokens: int, calibration: Calibration) -> Plan:
    """The plan's capacity figures recomputed from `tokens` (blocks, max context, concurrency, band)."""
    limit = plan.context if plan.needs_yarn else plan.model.max_position_embeddings  # the model's window
    blocks = tokens // plan.block_size
    warnings = plan.warnings
    if tokens < plan.context:
        warnings = (*warnings, f"{calibration.note}: one request of {plan.context:,} tokens no longer fits")
    upper_only = plan.band is not None and plan.band.kv_cache_tokens_low is None
    return replace(
        plan,
        kv_cache_tokens=tokens,
        num_blocks=blocks,
        max_context=min(tokens, limit),
        max_concurrency=max_concurrency(blocks, plan.context, plan.block_size),
        band=kv_band(
            tokens,
            plan.context,
            limit,
            plan.block_size,
            upper_bound_only=upper_only,
            vllm_version=plan.request.vllm_version,
        ),
        warnings=warnings,
        calibration=calibration,
    )
