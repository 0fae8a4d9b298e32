"""Ranked fixes for a plan that does not fit: try each change, keep the ones that re-plan as fitting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from gpufleet.catalog import GIB, GpuSpec
from gpufleet.errors import PlanError
from gpufleet.planner import memory as mem
from gpufleet.planner.blocks import MIN_USEFUL_CONTEXT
from gpufleet.planner.types import Fix, Plan, PlanRequest


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _summary(p: Plan) -> str:
    speed = f", ~{p.decode_tok_s_estimate:.0f} tok/s" if p.decode_tok_s_estimate else ""
    return (
        f"fits: max context {p.max_context:,}, {p.max_concurrency:.1f} requests at {p.context:,}, "
        f"weights {_gib(p.weights_bytes_per_gpu)}/GPU{speed}"
    )


def candidates(req: PlanRequest, base: Plan, gpus: tuple[GpuSpec, ...]) -> list[tuple[str, PlanRequest]]:
    """Changes that might make `req` fit, least disruptive first."""
    model, out = req.model, []
    gpu = req.gpu
    if gpu is not None:
        startable = mem.suggested_utilization(gpu)
        if req.gpu_memory_utilization > startable:
            out.append((f"--gpu-memory-utilization {startable:g}", replace(req, gpu_memory_utilization=startable)))
    if req.context and base.needs_yarn and not req.allow_yarn:
        out.append(
            (
                f"allow YaRN (factor {base.yarn_factor}) for {req.context:,} tokens",
                replace(req, allow_yarn=True),
            )
        )
    if req.context:
        per_request = base.num_blocks // req.concurrency * base.block_size
        shorter = min(per_request, model.max_position_embeddings if not req.allow_yarn else req.context)
        if MIN_USEFUL_CONTEXT <= shorter < req.context:
            out.append((f"--max-model-len {shorter} (the largest that fits)", replace(req, context=shorter)))
    if req.concurrency > 1 and base.max_concurrency >= 1:
        n = int(base.max_concurrency)
        out.append(
            (
                f"plan for {n} concurrent request{'s' if n > 1 else ''} (--max-num-seqs {n})",
                replace(req, concurrency=n),
            )
        )
    if req.kv_cache_dtype == "auto" and gpu is not None:
        out.append(("--kv-cache-dtype fp8 (halves KV memory)", replace(req, kv_cache_dtype="fp8")))
    if gpu is not None and req.gpu_memory_utilization < startable:
        out.append((f"--gpu-memory-utilization {startable:g}", replace(req, gpu_memory_utilization=startable)))
    current = base.variant.weight_bytes
    for quant, variant in sorted(model.variants.items(), key=lambda kv: kv[1].weight_bytes):
        if variant.format == "safetensors" and variant.weight_bytes < current:
            out.append(
                (
                    f"--quantization {quant}: {variant.repo} ({_gib(variant.weight_bytes)})",
                    replace(req, quantization=quant),
                )
            )
    if gpu is not None:
        tp = req.tensor_parallel
        while tp < 8:
            tp *= 2
            if model.attention_heads % tp == 0:
                count = tp * req.pipeline_parallel
                out.append((f"TP={tp}: {count}x {gpu.name}", replace(req, tensor_parallel=tp, nodes=None)))
        for other in sorted(gpus, key=lambda g: g.usable_bytes):
            if other.usable_bytes > gpu.usable_bytes:
                out.append((f"a bigger GPU: {other.name} ({_gib(other.usable_bytes)})", replace(req, gpu=other)))
        if not req.allow_cpu_offload:
            out.append(
                (
                    "--cpu-offload-gb (slow: weights cross PCIe every token)",
                    replace(req, allow_cpu_offload=True),
                )
            )
    return out


def suggest_fixes(
    req: PlanRequest,
    base: Plan,
    gpus: tuple[GpuSpec, ...],
    *,
    compute: Callable[[PlanRequest], Plan],
    max_fixes: int = 5,
) -> list[Fix]:
    """Candidates from `candidates`, re-planned with `compute`; only the smallest TP / bigger GPU that fits."""
    fixes: list[Fix] = []
    seen_gpu = seen_tp = False
    for description, candidate in candidates(req, base, gpus):
        other_gpu = candidate.gpu is not req.gpu
        more_tp = candidate.tensor_parallel != req.tensor_parallel and not other_gpu
        if (other_gpu and seen_gpu) or (more_tp and seen_tp):
            continue  # only the smallest bigger GPU / the smallest TP that fits
        try:
            trial = compute(candidate)
        except PlanError:
            continue
        if not trial.fits:
            continue
        seen_gpu = seen_gpu or other_gpu
        seen_tp = seen_tp or more_tp
        changes = {
            k: getattr(candidate, k)
            for k in (
                "quantization",
                "context",
                "concurrency",
                "kv_cache_dtype",
                "gpu_memory_utilization",
                "tensor_parallel",
                "allow_yarn",
                "allow_cpu_offload",
            )
            if getattr(candidate, k) != getattr(req, k)
        }
        if candidate.gpu is not req.gpu and candidate.gpu is not None:
            changes["gpu"] = candidate.gpu.name
        result = _summary(trial)
        if trial.cpu_offload_used:
            result += f" (vs ~{trial.decode_tok_s_without_offload or 0:.0f} tok/s if it fitted in VRAM)"
            description = f"--cpu-offload-gb {trial.cpu_offload_bytes // GIB} (weights cross PCIe every token)"
        fixes.append(Fix(description, changes, result))
        if len(fixes) >= max_fixes:
            break
    return fixes
