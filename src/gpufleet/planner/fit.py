"""Plan one model on one kind of GPU (or vLLM's CPU backend): does it fit, and how.

    >>> from gpufleet.catalog import get_gpu, get_model
    >>> p = plan_model(get_model("qwen3-32b").spec, get_gpu("rtx3090"), quantization="awq", context=8192)
    >>> p.fits, p.quantization_kernel
    (True, 'awq_marlin')

Pure: numbers in, a frozen Plan out. Memory terms follow vLLM's accounting (planner/memory.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gpufleet.catalog import GIB, GpuSpec, ModelSpec, Variant
from gpufleet.catalog.sizing import estimate_weight_bytes
from gpufleet.errors import PlanError
from gpufleet.planner import memory as mem
from gpufleet.planner.band import kv_band
from gpufleet.planner.budget import Budget, Capacity, cpu_budget, fit_capacity, gpu_budget
from gpufleet.planner.fixes import suggest_fixes
from gpufleet.planner.kernels import SLOW_KERNEL_FACTOR, KernelChoice, choose_kernel
from gpufleet.planner.rope import Yarn, yarn_for
from gpufleet.planner.throughput import decode_tok_s, pcie_gbps
from gpufleet.planner.types import Fix, KvBand, Plan, PlanRequest
from gpufleet.planner.vllm_versions import version_tuple

__all__ = ["Fix", "Plan", "PlanRequest", "compute_plan", "plan", "plan_model", "validate"]


WHAT_IF_QUANTIZATIONS = ("bf16", "fp16", "fp8", "w8a8", "awq", "gptq")


def hypothetical_variant(model: ModelSpec, quantization: str) -> Variant:
    """A checkpoint that does not exist: the weights re-sized for `quantization` (catalog/sizing.py).

    Embeddings and lm_head stay 16-bit as in real AWQ/GPTQ/FP8 checkpoints; the rest takes the
    method's bytes per parameter.
    """
    if quantization not in WHAT_IF_QUANTIZATIONS:
        raise PlanError(
            f"no size rule for a hypothetical {quantization!r} checkpoint; "
            f"use one of {', '.join(WHAT_IF_QUANTIZATIONS)}",
            param="quantization",
        )
    embedding = model.vocab_size * model.hidden_size * (1 if model.tie_word_embeddings else 2)
    size = estimate_weight_bytes(quantization, model.params_total, embedding)
    return Variant(
        quantization=quantization,
        repo=f"(hypothetical {quantization} checkpoint of {model.name})",
        weight_bytes=size,
        weight_bytes_source=(
            f"what-if: {quantization} size from {model.params_total / 1e9:.2f}B params, no such checkpoint"
        ),
    )


def _variant(model: ModelSpec, quantization: str | None, what_if: bool = False) -> Variant:
    name = quantization or model.default_quantization
    variant = model.variants.get(name)
    if variant is None and what_if:
        return hypothetical_variant(model, name)
    if variant is None:
        raise PlanError(
            f"{model.name} has no {name!r} checkpoint; available: {', '.join(model.variants)} "
            "(--what-if plans a hypothetical one)",
            param="quantization",
        )
    if variant.format != "safetensors":
        usable = [q for q, v in model.variants.items() if v.format == "safetensors"]
        raise PlanError(
            f"{model.name} {name} is a {variant.format} file for the embedded llama.cpp engine; vLLM plans "
            f"need a safetensors checkpoint ({', '.join(usable) or 'none listed'})",
            param="quantization",
        )
    return variant


def validate(req: PlanRequest) -> None:
    """Reject nonsense numbers with a PlanError that names the parameter."""
    if not 0 < req.gpu_memory_utilization <= 1:
        raise PlanError(
            f"gpu_memory_utilization must be in (0, 1], got {req.gpu_memory_utilization}",
            param="gpu_memory_utilization",
        )
    if req.context is not None and req.context <= 0:
        raise PlanError(f"context must be a positive number of tokens, got {req.context}", param="context")
    for name in ("concurrency", "tensor_parallel", "pipeline_parallel"):
        value = getattr(req, name)
        if value < 1:
            raise PlanError(f"{name} must be >= 1, got {value}", param=name)
    if req.nodes is not None and req.nodes < 1:
        raise PlanError(f"nodes must be >= 1, got {req.nodes}", param="nodes")
    if req.kv_cache_dtype not in mem.KV_DTYPE_BYTES:
        raise PlanError(
            f"kv_cache_dtype must be one of {', '.join(mem.KV_DTYPE_BYTES)}, got {req.kv_cache_dtype!r}",
            param="kv_cache_dtype",
        )
    if req.kv_cache_dtype == "float32" and req.gpu is not None:
        raise PlanError(
            "kv_cache_dtype float32 is the CPU backend's --dtype float32; on a GPU use auto, bfloat16 or fp8",
            param="kv_cache_dtype",
        )
    if not 0 < req.efficiency <= 1:
        raise PlanError(f"efficiency must be in (0, 1], got {req.efficiency}", param="efficiency")
    for name in ("max_num_batched_tokens", "max_num_seqs", "block_size"):
        value = getattr(req, name)
        if value is not None and value < 1:
            raise PlanError(f"{name} must be >= 1, got {value}", param=name)
    try:
        version_tuple(req.vllm_version)
    except ValueError as err:
        raise PlanError(str(err), param="vllm_version") from err
    if req.gpu is None:
        if req.cpu_kv_space_bytes is None or req.cpu_kv_space_bytes <= 0:
            raise PlanError(
                "a CPU plan needs the KV cache space (VLLM_CPU_KVCACHE_SPACE), e.g. 1 GiB",
                param="cpu_kv_space_bytes",
            )
        if req.pipeline_parallel > 1:
            raise PlanError("the CPU plan does not model pipeline parallelism", param="pipeline_parallel")


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _parallel_problems(model: ModelSpec, tp: int, pp: int) -> list[str]:
    problems = []
    # vLLM: "Total number of attention heads (40) must be divisible by tensor parallel size (3)."
    if model.attention_heads % tp:
        valid = [n for n in (1, 2, 4, 8) if model.attention_heads % n == 0]
        problems.append(
            f"{model.attention_heads} attention heads are not divisible by TP={tp}; vLLM "
            f"refuses to start. Use TP in {valid}."
        )
    elif tp > model.kv_heads and tp % model.kv_heads:
        problems.append(
            f"TP={tp} is not a multiple of the {model.kv_heads} KV heads; vLLM cannot replicate them evenly."
        )
    elif tp < model.kv_heads and model.kv_heads % tp:
        problems.append(f"{model.kv_heads} KV heads are not divisible by TP={tp}.")
    if pp > model.layers:
        problems.append(f"PP={pp} is more than the {model.layers} layers.")
    return problems


def compute_plan(req: PlanRequest) -> Plan:
    """One plan, without fix suggestions: resolve the checkpoint, size the budget, fit, speed, band."""
    validate(req)
    model, gpu = req.model, req.gpu
    variant = _variant(model, req.quantization, req.what_if)
    kernel = _resolve_kernel(req, variant)
    reasons: list[str] = [kernel.problem] if kernel.problem else []
    reasons.extend(_parallel_problems(model, req.tensor_parallel, req.pipeline_parallel))
    unmodelled = _uncertainty_warnings(model, variant, req)
    warnings = _setup_warnings(req, variant)
    yarn, limit = _context_window(req, reasons, warnings)
    budget = cpu_budget(req, variant) if gpu is None else gpu_budget(req, variant, gpu, limit, reasons, warnings)
    cap = fit_capacity(req, budget, limit, reasons, warnings)
    speed = _speed(req, kernel.kernel, budget, cap, warnings)
    band = (
        None
        if gpu is None
        else kv_band(
            cap.kv_tokens,
            cap.target,
            limit,
            budget.block_size,
            upper_bound_only=bool(unmodelled),
            vllm_version=req.vllm_version,
        )
    )
    return _assemble(req, variant, kernel, reasons, warnings, yarn, budget, cap, speed, band)


def _assemble(
    req: PlanRequest,
    variant: Variant,
    kernel: KernelChoice,
    reasons: list[str],
    warnings: list[str],
    yarn: Yarn,
    budget: Budget,
    cap: Capacity,
    speed: tuple[float | None, float | None],
    band: KvBand | None,
) -> Plan:
    """The Plan from each stage's result (`speed`: decode tok/s with and without CPU offload)."""
    return Plan(
        request=req,
        fits=not reasons,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        variant=variant,
        quantization_kernel=kernel.kernel,
        dtype=kernel.dtype,
        device=req.gpu.name if req.gpu else "cpu",
        tensor_parallel=req.tensor_parallel,
        pipeline_parallel=req.pipeline_parallel,
        nodes=budget.nodes,
        enforce_eager=budget.eager,
        context=cap.target,
        block_size=budget.block_size,
        max_num_batched_tokens=budget.max_num_batched_tokens,
        max_num_seqs=budget.max_num_seqs,
        profile_tokens=budget.batch.tokens,
        profile_seqs=budget.batch.seqs,
        profile_why=budget.batch.why,
        total_bytes_per_gpu=budget.total,
        requested_bytes_per_gpu=budget.requested,
        weights_bytes_per_gpu=budget.weights,
        non_torch_bytes=budget.non_torch,
        activation_peak_bytes=budget.activation,
        sampler_bytes=budget.sampler,
        cudagraph_bytes=budget.graphs,
        cuda_context_bytes=budget.cuda_context,
        kv_cache_bytes_per_gpu=cap.kv_cache_bytes,
        kv_bytes_per_token=budget.kv_per_token,
        num_blocks=cap.blocks,
        kv_cache_tokens=cap.kv_tokens,
        max_context=cap.max_context,
        max_concurrency=cap.concurrency,
        needs_yarn=yarn.needed,
        yarn_factor=yarn.factor,
        yarn_original_context=yarn.original_context,
        cpu_offload_bytes=cap.offload_bytes,
        cpu_offload_used=cap.offload_used,
        decode_tok_s_estimate=speed[0],
        decode_tok_s_without_offload=speed[1],
        band=band,
    )


def _resolve_kernel(req: PlanRequest, variant: Variant) -> KernelChoice:
    """The quantization kernel for this GPU, or the one the request forces (seed 001's plain awq)."""
    kernel = choose_kernel(variant, req.gpu)
    if not req.quantization_kernel or req.quantization_kernel == kernel.kernel:
        return kernel
    if kernel.kernel is None or not kernel.kernel.startswith(req.quantization_kernel):
        raise PlanError(
            f"kernel {req.quantization_kernel!r} does not run {variant.quantization} weights "
            f"(the plan picked {kernel.kernel!r})",
            param="quantization_kernel",
        )
    return replace(kernel, kernel=req.quantization_kernel)


def _setup_warnings(req: PlanRequest, variant: Variant) -> list[str]:
    """Warnings that follow from the request alone: unmodelled memory, a hypothetical checkpoint."""
    warnings = []
    if req.gpu is None and req.kv_cache_dtype.startswith("fp8"):
        warnings.append("vLLM's CPU backend has no fp8 KV cache; it falls back to 'auto' (platforms/cpu.py)")
    warnings.extend(_uncertainty_warnings(req.model, variant, req))
    if variant.repo.startswith("(hypothetical"):
        warnings.insert(
            0,
            f"HYPOTHETICAL: {req.model.name} has no {variant.quantization} checkpoint; the weights are re-sized "
            f"to {_gib(variant.weight_bytes)} ({variant.weight_bytes_source}); quantize it before serving",
        )
    return warnings


def _context_window(req: PlanRequest, reasons: list[str], warnings: list[str]) -> tuple[Yarn, int]:
    """The longest context the model allows: max_position_embeddings, or the requested one with YaRN."""
    model = req.model
    yarn = yarn_for(model, req.context or 0)
    if not yarn.needed:
        return yarn, model.max_position_embeddings
    too_long = f"context {req.context:,} exceeds max_position_embeddings {model.max_position_embeddings:,}"
    if not yarn.supported:
        reasons.append(
            f"{too_long} and {model.name} has no YaRN recipe. Use --max-model-len <= {model.max_position_embeddings:,}."
        )
    elif not req.allow_yarn:
        reasons.append(f"{too_long}: it needs YaRN (factor {yarn.factor}); allow YaRN or use a shorter context.")
    else:
        assert req.context is not None
        warnings.append(
            f"YaRN factor {yarn.factor} on {yarn.original_context:,}: static scaling costs "
            "quality on short texts; use it for long-context deployments only (Qwen docs)"
        )
        return yarn, req.context
    return yarn, model.max_position_embeddings


def _speed(
    req: PlanRequest, kernel: str | None, budget: Budget, cap: Capacity, warnings: list[str]
) -> tuple[float | None, float | None]:
    """Roofline decode tok/s of one stream: it reads the active weights and half the context's KV."""
    gpu = req.gpu
    if gpu is None:
        return None, None
    model = req.model
    active = model.params_active / model.params_total
    kv_read = budget.kv_per_token * cap.target / 2
    factor = SLOW_KERNEL_FACTOR.get(kernel or "", 1.0)
    if kernel in SLOW_KERNEL_FACTOR:
        warnings.append(
            f"{kernel} without Marlin is ~{factor}x slower (seed 001); Marlin needs compute capability >= 8.0"
        )
    tok_s_vram = decode_tok_s(
        bytes_per_token=budget.weights * active + kv_read,
        bandwidth_gbps=gpu.bandwidth_gbps,
        efficiency=req.efficiency,
        kernel_factor=factor,
    )
    if not cap.offload_bytes:
        return tok_s_vram, tok_s_vram
    link = pcie_gbps(gpu.pcie_gen, pinned_memory=not req.host_wsl2)
    if link is None:
        return None, tok_s_vram  # unified memory: there is no slower memory to offload to
    tok_s = decode_tok_s(
        bytes_per_token=(budget.weights - cap.offload_bytes) * active + kv_read,
        bandwidth_gbps=gpu.bandwidth_gbps,
        efficiency=req.efficiency,
        kernel_factor=factor,
        offload_bytes_per_token=cap.offload_bytes * active,
        pcie_gbps=link,
    )
    return tok_s, tok_s_vram


def _uncertainty_warnings(model: ModelSpec, variant: Variant, req: PlanRequest) -> list[str]:
    """Setups whose non-KV memory the planner cannot size: say so instead of a confident number."""
    out = []
    if model.is_moe and variant.quantization == "fp8":
        out.append(
            "MoE + FP8: fused-MoE FP8 kernels take workspaces beyond the weights (GiBs on large MoE "
            "models, issue 15); the KV figure is an upper bound, check vLLM's 'GPU KV cache size' line"
        )
    if req.kv_connector:
        out.append(
            f"KV connector {req.kv_connector}: its buffers come out of the same budget and are not "
            "modelled; the KV figure is an upper bound"
        )
    return out


def plan(req: PlanRequest, *, alternative_gpus: tuple[GpuSpec, ...] = (), max_fixes: int = 5) -> Plan:
    """Plan `req`; when it does not fit, attach ranked fixes (each re-planned to prove it fits)."""
    base = compute_plan(req)
    if base.fits:
        return base
    fixes = suggest_fixes(req, base, alternative_gpus, compute=compute_plan, max_fixes=max_fixes)
    reasons = list(base.reasons)
    if fixes:
        ranked = "; ".join(f"({i}) {f.description} -> {f.result}" for i, f in enumerate(fixes, 1))
        reasons[-1] = f"{reasons[-1]} Fixes, best first: {ranked}"
    else:
        reasons[-1] = (
            f"{reasons[-1]} No single change (context, fp8 KV, utilization, quantization, TP, GPU, "
            "CPU offload) makes it fit."
        )
    return replace(base, reasons=tuple(reasons), fixes=tuple(fixes))


def plan_model(
    model: ModelSpec, gpu: GpuSpec | None, *, alternative_gpus: tuple[GpuSpec, ...] = (), **options: Any
) -> Plan:
    """Convenience: `plan(PlanRequest(model, gpu, **options))`."""
    try:
        req = PlanRequest(model, gpu, **options)
    except TypeError as err:
        raise PlanError(f"unknown planning option: {err}") from err
    return plan(req, alternative_gpus=alternative_gpus)
