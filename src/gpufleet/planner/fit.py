"""Plan one model on one kind of GPU (or vLLM's CPU backend): does it fit, and how.

    >>> from gpufleet.catalog import get_gpu, get_model
    >>> p = plan_model(get_model("qwen3-32b").spec, get_gpu("rtx3090"), quantization="awq", context=8192)
    >>> p.fits, p.quantization_kernel
    (True, 'awq_marlin')

Pure: numbers in, a frozen Plan out. Memory terms follow vLLM's accounting (planner/memory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from gpufleet.catalog import GIB, GpuSpec, ModelSpec, Variant
from gpufleet.catalog.sizing import estimate_weight_bytes
from gpufleet.errors import PlanError
from gpufleet.planner import memory as mem
from gpufleet.planner.blocks import MIN_USEFUL_CONTEXT, cdiv, kv_bytes_for, max_concurrency, num_blocks
from gpufleet.planner.fixes import suggest_fixes
from gpufleet.planner.kernels import SLOW_KERNEL_FACTOR, choose_kernel
from gpufleet.planner.rope import yarn_for
from gpufleet.planner.throughput import DECODE_EFFICIENCY, decode_tok_s, pcie_gbps
from gpufleet.planner.vllm_versions import DEFAULT_VLLM_VERSION, has_v0_engine, is_v1_default, version_tuple


@dataclass(frozen=True)
class PlanRequest:
    """Everything a plan depends on. `gpu=None` plans vLLM's CPU backend (needs cpu_kv_space_bytes)."""

    model: ModelSpec
    gpu: GpuSpec | None
    quantization: str | None = None
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    nodes: int | None = None
    gpu_memory_utilization: float = mem.DEFAULT_UTILIZATION
    context: int | None = None
    concurrency: int = 1
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    quantization_kernel: str | None = None  # force e.g. "awq" instead of awq_marlin (seed 001's old setup)
    allow_yarn: bool = True
    allow_cpu_offload: bool = False
    host_wsl2: bool = False
    vllm_version: str = DEFAULT_VLLM_VERSION
    efficiency: float = DECODE_EFFICIENCY
    cpu_kv_space_bytes: int | None = None
    block_size: int | None = None
    offline: bool = False  # the LLM() class (larger batch defaults) instead of `vllm serve`
    kv_connector: str | None = None  # --kv-transfer-config's kv_connector, e.g. LMCacheConnectorV1
    pytorch_sampler: bool = False  # the PyTorch fallback sampler (no FlashInfer top-k/top-p)
    what_if: bool = False  # plan a quantization the model has no checkpoint for (re-sized weights)


@dataclass(frozen=True)
class Fix:
    """One way to make a plan fit: what to change and what the changed plan looks like."""

    description: str
    changes: dict[str, object]
    result: str


@dataclass(frozen=True)
class Plan:
    """The outcome: fit or not (with ranked fixes), the memory budget per GPU, and speed."""

    request: PlanRequest
    fits: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    variant: Variant
    quantization_kernel: str | None
    dtype: str | None
    device: str
    tensor_parallel: int
    pipeline_parallel: int
    nodes: int
    enforce_eager: bool
    context: int
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int
    profile_tokens: int
    profile_seqs: int
    profile_why: str
    total_bytes_per_gpu: int
    requested_bytes_per_gpu: int
    weights_bytes_per_gpu: int
    non_torch_bytes: int
    activation_peak_bytes: int
    sampler_bytes: int
    cudagraph_bytes: int
    cuda_context_bytes: int
    kv_cache_bytes_per_gpu: int
    kv_bytes_per_token: int
    num_blocks: int
    kv_cache_tokens: int
    max_context: int
    max_concurrency: float
    needs_yarn: bool
    yarn_factor: float | None
    yarn_original_context: int | None
    cpu_offload_bytes: int
    cpu_offload_used: bool
    decode_tok_s_estimate: float | None
    decode_tok_s_without_offload: float | None
    fixes: tuple[Fix, ...] = field(default=())

    @property
    def model(self) -> ModelSpec:
        """The planned model."""
        return self.request.model

    @property
    def hypothetical(self) -> bool:
        """True when the checkpoint does not exist (a --what-if quantization)."""
        return self.variant.repo.startswith("(hypothetical")

    def kv_bytes_for_context(self, context: int) -> int:
        """KV bytes per GPU that one request of `context` tokens holds."""
        return kv_bytes_for(context, self.kv_bytes_per_token, self.block_size)


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
    """One plan, without fix suggestions."""
    validate(req)
    model, gpu = req.model, req.gpu
    variant = _variant(model, req.quantization, req.what_if)
    kernel = choose_kernel(variant, gpu)
    if req.quantization_kernel and req.quantization_kernel != kernel.kernel:
        if kernel.kernel is None or not kernel.kernel.startswith(req.quantization_kernel):
            raise PlanError(
                f"kernel {req.quantization_kernel!r} does not run {variant.quantization} weights "
                f"(the plan picked {kernel.kernel!r})",
                param="quantization_kernel",
            )
        kernel = replace(kernel, kernel=req.quantization_kernel)
    tp, pp = req.tensor_parallel, req.pipeline_parallel
    world = tp * pp
    reasons: list[str] = []
    warnings: list[str] = []
    if kernel.problem:
        reasons.append(kernel.problem)
    reasons.extend(_parallel_problems(model, tp, pp))

    cpu_mode = gpu is None
    block = req.block_size or (mem.BLOCK_SIZE_CPU if cpu_mode else mem.BLOCK_SIZE_GPU)
    kv_dtype = req.kv_cache_dtype
    if cpu_mode and kv_dtype.startswith("fp8"):
        warnings.append("vLLM's CPU backend has no fp8 KV cache; it falls back to 'auto' (platforms/cpu.py)")
        kv_dtype = "auto"
    kv_per_token = mem.kv_bytes_per_token(model, tp, pp, mem.kv_dtype_bytes(kv_dtype))
    mnbt, mns = mem.default_batching(gpu, req.vllm_version, offline=req.offline)
    mnbt, mns = req.max_num_batched_tokens or mnbt, req.max_num_seqs or mns
    warnings.extend(_uncertainty_warnings(model, variant, req))
    if variant.repo.startswith("(hypothetical"):
        warnings.insert(
            0,
            f"HYPOTHETICAL: {model.name} has no {variant.quantization} checkpoint; the weights are re-sized "
            f"to {_gib(variant.weight_bytes)} ({variant.weight_bytes_source}); quantize it before serving",
        )

    # Context window: explicit, or as long as the model allows (vLLM's derived max_model_len).
    yarn = yarn_for(model, req.context or 0)
    limit = model.max_position_embeddings
    if yarn.needed:
        if not yarn.supported:
            reasons.append(
                f"context {req.context:,} exceeds max_position_embeddings "
                f"{model.max_position_embeddings:,} and {model.name} has no YaRN recipe. "
                f"Use --max-model-len <= {model.max_position_embeddings:,}."
            )
        elif not req.allow_yarn:
            reasons.append(
                f"context {req.context:,} exceeds max_position_embeddings "
                f"{model.max_position_embeddings:,}: it needs YaRN (factor {yarn.factor}); "
                "allow YaRN or use a shorter context."
            )
        else:
            assert req.context is not None
            limit = req.context
            warnings.append(
                f"YaRN factor {yarn.factor} on {yarn.original_context:,}: static scaling costs "
                "quality on short texts; use it for long-context deployments only (Qwen docs)"
            )

    offload_bytes = 0
    offload_used = False
    if cpu_mode:
        assert req.cpu_kv_space_bytes is not None
        total = requested = kv_cache = req.cpu_kv_space_bytes
        weights = variant.weight_bytes
        non_torch = act = sampler = graphs = ctx_bytes = 0
        batch = mem.ProfileBatch(mnbt, mns, "CPU backend: the KV space is fixed")
        eager = True
        nodes = 1
        blocks = num_blocks(kv_cache, kv_per_token, block)
    else:
        assert gpu is not None
        nodes = req.nodes or cdiv(world, gpu.gpus_per_node)
        eager = req.enforce_eager or gpu.needs_eager
        if gpu.needs_eager and not req.enforce_eager:
            warnings.append(f"--enforce-eager on {gpu.name}: {gpu.eager_reason}")
        total = gpu.usable_bytes
        requested = mem.requested_bytes(gpu, req.gpu_memory_utilization)
        weights = cdiv(variant.weight_bytes, world)
        non_torch = mem.non_torch_bytes(world, gpu, req.vllm_version)
        batch = mem.profile_batch(
            req.vllm_version,
            req.context or limit,
            req.max_num_batched_tokens,
            req.max_num_seqs,
            gpu,
            offline=req.offline,
        )
        act = mem.activation_peak_bytes(model, tp, batch.tokens, req.vllm_version)
        if not is_v1_default(req.vllm_version):
            act += mem.v0_sampler_bytes(model, batch.seqs)
        sampler = mem.sampler_bytes(model, batch.seqs, req.vllm_version, pytorch_sampler=req.pytorch_sampler)
        graphs = mem.cudagraph_bytes(model, pp, eager, req.vllm_version)
        ctx_bytes = mem.CUDA_CONTEXT_BYTES
        startable = mem.max_startable_utilization(gpu)
        if req.gpu_memory_utilization > startable:
            host = (
                f" and ~{_gib(gpu.host_reserved_bytes)} the host keeps (unified memory)"
                if gpu.host_reserved_bytes
                else ""
            )
            reasons.append(
                f"--gpu-memory-utilization {req.gpu_memory_utilization:g} asks for {_gib(requested)}, "
                f"but only ~{_gib(total - ctx_bytes - gpu.host_reserved_bytes)} is free at start "
                f"(CUDA context{host}); vLLM refuses to start. Use <= {mem.suggested_utilization(gpu):g}."
            )
        if nodes > 1:
            warnings.append(
                f"{nodes} nodes: vLLM needs a Ray cluster across them (--distributed-executor-backend ray; seed 004)"
            )
        kv_cache = requested - weights - non_torch - act - sampler - graphs
        blocks = num_blocks(kv_cache, kv_per_token, block)

    target = req.context or min(blocks * block, limit)
    need_blocks = cdiv(target, block) * req.concurrency
    kv_short = blocks < need_blocks or (req.context is None and blocks * block < MIN_USEFUL_CONTEXT)

    if not cpu_mode and kv_short:
        assert gpu is not None
        need_kv = max(need_blocks, cdiv(MIN_USEFUL_CONTEXT, block)) * block * kv_per_token
        deficit = need_kv - kv_cache
        offload_bytes = math.ceil(deficit / GIB) * GIB
        offload_problem = _offload_problem(gpu, req)
        if req.allow_cpu_offload and offload_problem is None and offload_bytes < weights:
            offload_used = True
            kv_cache += offload_bytes
            blocks = num_blocks(kv_cache, kv_per_token, block)
            target = req.context or min(blocks * block, limit)
            kv_short = False
            warnings.append(
                f"--cpu-offload-gb {offload_bytes // GIB}: weights stream over PCIe every token "
                "(seed 001: 19 -> 1.6 tok/s); a last resort"
            )
            if req.host_wsl2:
                warnings.append(
                    "WSL2 has no pinned memory: the V1 engine cannot offload, so the plan sets "
                    "VLLM_USE_V1=0 (seed 001; only vLLM < 0.11 has V0)"
                )
        elif req.allow_cpu_offload and offload_problem:
            reasons.append(f"CPU offload is not possible: {offload_problem}")

    kv_tokens = blocks * block
    max_context = min(kv_tokens, limit)
    concurrency = max_concurrency(blocks, target, block)

    if kv_short:
        weights_room = requested - non_torch - act - sampler - graphs
        if not cpu_mode and weights > weights_room:
            reasons.append(
                f"weights need {_gib(weights)} per GPU but the budget leaves {_gib(max(weights_room, 0))} "
                f"({req.gpu_memory_utilization:g} x {_gib(total)} minus {_gib(non_torch + act + sampler + graphs)} "
                "for activations, sampler, CUDA graphs and workspaces)."
            )
        elif req.context is None:
            reasons.append(
                f"only {kv_tokens:,} tokens of KV cache fit ({_gib(max(kv_cache, 0))}); a useful "
                f"deployment needs >= {MIN_USEFUL_CONTEXT:,}."
            )
        else:
            need_bytes = need_blocks * block * kv_per_token
            who = f"{req.concurrency} requests" if req.concurrency > 1 else "one request"
            verb = "needs" if req.concurrency == 1 else "need"
            reasons.append(
                f"{who} of {target:,} tokens {verb} {_gib(need_bytes)} of KV "
                f"cache per GPU; {_gib(max(kv_cache, 0))} is left after weights and overhead "
                f"(max context {max_context:,}, {concurrency:.2f} requests at {target:,})."
            )

    # Speed: one decode stream reads the active weights and half the context's KV per token.
    tok_s: float | None = None
    tok_s_vram: float | None = None
    if not cpu_mode:
        assert gpu is not None
        active = model.params_active / model.params_total
        kv_read = kv_per_token * target / 2
        factor = SLOW_KERNEL_FACTOR.get(kernel.kernel or "", 1.0)
        if kernel.kernel in SLOW_KERNEL_FACTOR:
            warnings.append(
                f"{kernel.kernel} without Marlin is ~{factor}x slower (seed 001); "
                "Marlin needs compute capability >= 8.0"
            )
        tok_s_vram = decode_tok_s(
            bytes_per_token=weights * active + kv_read,
            bandwidth_gbps=gpu.bandwidth_gbps,
            efficiency=req.efficiency,
            kernel_factor=factor,
        )
        link = pcie_gbps(gpu.pcie_gen, pinned_memory=not req.host_wsl2)
        if offload_bytes and link is None:
            tok_s = None  # unified memory: there is no slower memory to offload to
        elif offload_bytes:
            tok_s = decode_tok_s(
                bytes_per_token=(weights - offload_bytes) * active + kv_read,
                bandwidth_gbps=gpu.bandwidth_gbps,
                efficiency=req.efficiency,
                kernel_factor=factor,
                offload_bytes_per_token=offload_bytes * active,
                pcie_gbps=link,
            )
        else:
            tok_s = tok_s_vram
    return Plan(
        request=req,
        fits=not reasons,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        variant=variant,
        quantization_kernel=kernel.kernel,
        dtype=kernel.dtype,
        device=gpu.name if gpu else "cpu",
        tensor_parallel=tp,
        pipeline_parallel=pp,
        nodes=nodes,
        enforce_eager=eager,
        context=target,
        block_size=block,
        max_num_batched_tokens=mnbt,
        max_num_seqs=mns,
        profile_tokens=batch.tokens,
        profile_seqs=batch.seqs,
        profile_why=batch.why,
        total_bytes_per_gpu=total,
        requested_bytes_per_gpu=requested,
        weights_bytes_per_gpu=weights,
        non_torch_bytes=non_torch,
        activation_peak_bytes=act,
        sampler_bytes=sampler,
        cudagraph_bytes=graphs,
        cuda_context_bytes=ctx_bytes,
        kv_cache_bytes_per_gpu=kv_cache,
        kv_bytes_per_token=kv_per_token,
        num_blocks=blocks,
        kv_cache_tokens=kv_tokens,
        max_context=max_context,
        max_concurrency=concurrency,
        needs_yarn=yarn.needed,
        yarn_factor=yarn.factor,
        yarn_original_context=yarn.original_context,
        cpu_offload_bytes=offload_bytes,
        cpu_offload_used=offload_used,
        decode_tok_s_estimate=tok_s,
        decode_tok_s_without_offload=tok_s_vram,
    )


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


def _offload_problem(gpu: GpuSpec, req: PlanRequest) -> str | None:
    if gpu.pcie_gen is None or gpu.unified_memory:
        return f"{gpu.name} has unified memory; offloading to 'CPU' memory frees nothing"
    if req.host_wsl2 and not has_v0_engine(req.vllm_version):
        return (
            f"WSL2 has no pinned memory and vLLM {req.vllm_version}'s V1 engine needs it for "
            "--cpu-offload-gb (seed 001: 'V1 CPU offloading requires uva (pin memory) support'); "
            "V0 was removed in 0.11"
        )
    return None


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
