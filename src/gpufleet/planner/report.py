"""The plan as JSON: the stable interface `gpufleet plan --json` prints and scripts read.

Keys promised by issue #4 (never renamed): fits, reasons, weights_bytes_per_gpu,
kv_bytes_per_token, kv_cache_tokens, max_context, max_concurrency, needs_yarn, yarn_factor,
cpu_offload_bytes, quantization, decode_tok_s_estimate, argv, env. Others may be added.
"""

from __future__ import annotations

from gpufleet.planner.context_table import context_table
from gpufleet.planner.launch import LaunchPlan, launch_env
from gpufleet.planner.types import Plan
from gpufleet.planner.vllm_versions import budgets_cudagraphs


def plan_json(plan: Plan, launch: LaunchPlan | None) -> dict[str, object]:
    """A JSON-ready dict of the plan; `argv`/`env` are empty when it does not fit."""
    req = plan.request
    return {
        "fits": plan.fits,
        "reasons": list(plan.reasons),
        "fixes": [{"description": f.description, "changes": f.changes, "result": f.result} for f in plan.fixes],
        "warnings": list(plan.warnings),
        "model": plan.model.name,
        "checkpoint": plan.variant.repo,
        "checkpoint_quantization": plan.variant.quantization,
        "hypothetical": plan.hypothetical,
        "quantization": plan.quantization_kernel,
        "device": plan.device,
        "gpu_count": plan.tensor_parallel * plan.pipeline_parallel if plan.device != "cpu" else 0,
        "tensor_parallel": plan.tensor_parallel,
        "pipeline_parallel": plan.pipeline_parallel,
        "nodes": plan.nodes,
        "gpu_memory_utilization": req.gpu_memory_utilization if plan.device != "cpu" else None,
        "enforce_eager": plan.enforce_eager,
        "kv_cache_dtype": req.kv_cache_dtype,
        "context": plan.context,
        "concurrency": req.concurrency,
        "total_bytes_per_gpu": plan.total_bytes_per_gpu,
        "requested_bytes_per_gpu": plan.requested_bytes_per_gpu,
        "weights_bytes_per_gpu": plan.weights_bytes_per_gpu,
        "non_torch_bytes": plan.non_torch_bytes,
        "activation_peak_bytes": plan.activation_peak_bytes,
        "max_num_batched_tokens": plan.max_num_batched_tokens,
        "max_num_seqs": plan.max_num_seqs,
        "profile_batch": {"tokens": plan.profile_tokens, "seqs": plan.profile_seqs, "why": plan.profile_why},
        "sampler_bytes": plan.sampler_bytes,
        "cudagraph_bytes": plan.cudagraph_bytes,
        "cudagraphs_budgeted": budgets_cudagraphs(req.vllm_version) and not plan.enforce_eager,
        "vllm_version": req.vllm_version,
        "cuda_context_bytes": plan.cuda_context_bytes,
        "kv_cache_bytes_per_gpu": plan.kv_cache_bytes_per_gpu,
        "kv_bytes_per_token": plan.kv_bytes_per_token,
        "block_size": plan.block_size,
        "num_blocks": plan.num_blocks,
        "kv_cache_tokens": plan.kv_cache_tokens,
        "max_context": plan.max_context,
        "max_concurrency": round(plan.max_concurrency, 2),
        **_band_json(plan),
        "calibration": _calibration_json(plan),
        "needs_yarn": plan.needs_yarn,
        "yarn_factor": plan.yarn_factor,
        "cpu_offload_bytes": plan.cpu_offload_bytes,
        "cpu_offload_used": plan.cpu_offload_used,
        "decode_tok_s_estimate": None if plan.decode_tok_s_estimate is None else round(plan.decode_tok_s_estimate, 1),
        "decode_efficiency": req.efficiency,
        "context_table": _context_table_json(plan),
        "served_model_name": launch.served_model_name if launch else None,
        "argv": list(launch.argv) if launch else [],
        "env": launch_env(launch) if launch else {},
    }


def _calibration_json(plan: Plan) -> dict[str, object] | None:
    """The launches on this host that corrected the plan (null: none)."""
    calibration = plan.calibration
    if calibration is None:
        return None
    return {
        "kind": calibration.kind,
        "planned_tokens": calibration.planned_tokens,
        "factor": round(calibration.factor, 4),
        "launches": calibration.launches,
        "note": calibration.note,
    }


def _context_table_json(plan: Plan) -> list[dict[str, object]]:
    """Max concurrency at the usual context lengths."""
    return [
        {
            "context": r.context,
            "kv_bytes_per_request": r.kv_bytes_per_request,
            "max_concurrency": round(r.max_concurrency, 2),
            "fits": r.fits,
            "needs_yarn": r.needs_yarn,
        }
        for r in context_table(plan)
    ]


def _band_json(plan: Plan) -> dict[str, object]:
    """kv_cache_tokens_low/_high and max context / concurrency at both ends (null: no such end)."""
    band = plan.band
    if band is None:
        keys = ("kv_cache_tokens", "max_context", "max_concurrency")
        empty: dict[str, object] = {f"{k}_{end}": None for k in keys for end in ("low", "high")}
        return empty | {"band": None}
    return {
        "kv_cache_tokens_low": band.kv_cache_tokens_low,
        "kv_cache_tokens_high": band.kv_cache_tokens_high,
        "max_context_low": band.max_context_low,
        "max_context_high": band.max_context_high,
        "max_concurrency_low": None if band.max_concurrency_low is None else round(band.max_concurrency_low, 2),
        "max_concurrency_high": round(band.max_concurrency_high, 2),
        "band": {"below": band.below, "above": band.above, "basis": band.basis},
    }
