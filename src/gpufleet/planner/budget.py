"""The per-GPU memory budget of one plan (vLLM's accounting, planner/memory.py) and what fits in it.

Two stages of `compute_plan`: `gpu_budget`/`cpu_budget` size every term of the budget;
`fit_capacity` turns the KV share into blocks, tokens and concurrency, offloads weights to the CPU
when allowed and needed, and says why a plan that does not fit falls short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.catalog import GIB, GpuSpec, Variant
from gpufleet.planner import memory as mem
from gpufleet.planner.blocks import MIN_USEFUL_CONTEXT, cdiv, max_concurrency, num_blocks
from gpufleet.planner.types import PlanRequest
from gpufleet.planner.vllm_versions import has_v0_engine, is_v1_default


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


@dataclass(frozen=True)
class Budget:
    """Every term of one GPU's (or the CPU backend's) memory budget, in bytes."""

    total: int
    requested: int
    weights: int
    non_torch: int
    activation: int
    sampler: int
    graphs: int
    cuda_context: int
    kv_cache: int
    kv_per_token: int
    block_size: int
    batch: mem.ProfileBatch
    max_num_batched_tokens: int
    max_num_seqs: int
    eager: bool
    nodes: int

    @property
    def overhead(self) -> int:
        """Everything but weights and KV: what vLLM's profile run and graphs take."""
        return self.non_torch + self.activation + self.sampler + self.graphs


@dataclass(frozen=True)
class Capacity:
    """What the KV share holds: blocks, tokens, the context planned for, offload if any."""

    kv_cache_bytes: int
    blocks: int
    kv_tokens: int
    target: int
    max_context: int
    concurrency: float
    offload_bytes: int
    offload_used: bool


def _batching(req: PlanRequest) -> tuple[int, int]:
    mnbt, mns = mem.default_batching(req.gpu, req.vllm_version, offline=req.offline)
    return req.max_num_batched_tokens or mnbt, req.max_num_seqs or mns


def cpu_budget(req: PlanRequest, variant: Variant) -> Budget:
    """vLLM's CPU backend: the KV space is exactly VLLM_CPU_KVCACHE_SPACE; fp8 KV falls back to auto."""
    assert req.cpu_kv_space_bytes is not None
    kv_dtype = "auto" if req.kv_cache_dtype.startswith("fp8") else req.kv_cache_dtype
    mnbt, mns = _batching(req)
    space = req.cpu_kv_space_bytes
    return Budget(
        total=space,
        requested=space,
        weights=variant.weight_bytes,
        non_torch=0,
        activation=0,
        sampler=0,
        graphs=0,
        cuda_context=0,
        kv_cache=space,
        kv_per_token=mem.kv_bytes_per_token(
            req.model, req.tensor_parallel, req.pipeline_parallel, mem.kv_dtype_bytes(kv_dtype)
        ),
        block_size=req.block_size or mem.BLOCK_SIZE_CPU,
        batch=mem.ProfileBatch(mnbt, mns, "CPU backend: the KV space is fixed"),
        max_num_batched_tokens=mnbt,
        max_num_seqs=mns,
        eager=True,
        nodes=1,
    )


def gpu_budget(
    req: PlanRequest, variant: Variant, gpu: GpuSpec, limit: int, reasons: list[str], warnings: list[str]
) -> Budget:
    """requested - weights - non-torch - activation peak - sampler - CUDA graphs = the KV share."""
    model, tp, pp = req.model, req.tensor_parallel, req.pipeline_parallel
    world = tp * pp
    nodes = req.nodes or cdiv(world, gpu.gpus_per_node)
    eager = req.enforce_eager or gpu.needs_eager
    if gpu.needs_eager and not req.enforce_eager:
        warnings.append(f"--enforce-eager on {gpu.name}: {gpu.eager_reason}")
    mnbt, mns = _batching(req)
    batch = mem.profile_batch(
        req.vllm_version, req.context or limit, req.max_num_batched_tokens, req.max_num_seqs, gpu, offline=req.offline
    )
    act = mem.activation_peak_bytes(model, tp, batch.tokens, req.vllm_version)
    if not is_v1_default(req.vllm_version):
        act += mem.v0_sampler_bytes(model, batch.seqs)
    requested = mem.requested_bytes(gpu, req.gpu_memory_utilization)
    weights = cdiv(variant.weight_bytes, world)
    non_torch = mem.non_torch_bytes(world, gpu, req.vllm_version, nodes=nodes)
    sampler = mem.sampler_bytes(model, batch.seqs, req.vllm_version, pytorch_sampler=req.pytorch_sampler)
    graphs = mem.cudagraph_bytes(model, pp, eager, req.vllm_version)
    reasons.extend(_startup_problems(req, gpu, requested))
    if nodes > 1:
        warnings.append(
            f"{nodes} nodes: vLLM needs a Ray cluster across them (--distributed-executor-backend ray; seed 004)"
        )
    return Budget(
        total=gpu.usable_bytes,
        requested=requested,
        weights=weights,
        non_torch=non_torch,
        activation=act,
        sampler=sampler,
        graphs=graphs,
        cuda_context=mem.CUDA_CONTEXT_BYTES,
        kv_cache=requested - weights - non_torch - act - sampler - graphs,
        kv_per_token=mem.kv_bytes_per_token(model, tp, pp, mem.kv_dtype_bytes(req.kv_cache_dtype)),
        block_size=req.block_size or mem.BLOCK_SIZE_GPU,
        batch=batch,
        max_num_batched_tokens=mnbt,
        max_num_seqs=mns,
        eager=eager,
        nodes=nodes,
    )


def _startup_problems(req: PlanRequest, gpu: GpuSpec, requested: int) -> list[str]:
    """vLLM refuses to start when free memory < requested (gpu_worker.py request_memory)."""
    if req.gpu_memory_utilization <= mem.max_startable_utilization(gpu):
        return []
    held = mem.CUDA_CONTEXT_BYTES + gpu.host_reserved_bytes
    host = f" and ~{_gib(gpu.host_reserved_bytes)} the host keeps (unified memory)" if gpu.host_reserved_bytes else ""
    return [
        f"--gpu-memory-utilization {req.gpu_memory_utilization:g} asks for {_gib(requested)}, "
        f"but only ~{_gib(gpu.usable_bytes - held)} is free at start "
        f"(CUDA context{host}); vLLM refuses to start. Use <= {mem.suggested_utilization(gpu):g}."
    ]


def fit_capacity(req: PlanRequest, budget: Budget, limit: int, reasons: list[str], warnings: list[str]) -> Capacity:
    """Blocks and tokens of the KV share; CPU offload when allowed and short; the reason when short."""
    block, kv_per_token = budget.block_size, budget.kv_per_token
    kv_cache = budget.kv_cache
    blocks = num_blocks(kv_cache, kv_per_token, block)
    target = req.context or min(blocks * block, limit)
    need_blocks = cdiv(target, block) * req.concurrency
    kv_short = blocks < need_blocks or (req.context is None and blocks * block < MIN_USEFUL_CONTEXT)
    offload_bytes, offload_used = 0, False
    if req.gpu is not None and kv_short:
        need_kv = max(need_blocks, cdiv(MIN_USEFUL_CONTEXT, block)) * block * kv_per_token
        offload_bytes = math.ceil((need_kv - kv_cache) / GIB) * GIB
        problem = offload_problem(req.gpu, req)
        if req.allow_cpu_offload and problem is None and offload_bytes < budget.weights:
            offload_used, kv_short = True, False
            kv_cache += offload_bytes
            blocks = num_blocks(kv_cache, kv_per_token, block)
            target = req.context or min(blocks * block, limit)
            warnings.extend(_offload_warnings(req, offload_bytes))
        elif req.allow_cpu_offload and problem:
            reasons.append(f"CPU offload is not possible: {problem}")
    kv_tokens = blocks * block
    cap = Capacity(
        kv_cache_bytes=kv_cache,
        blocks=blocks,
        kv_tokens=kv_tokens,
        target=target,
        max_context=min(kv_tokens, limit),
        concurrency=max_concurrency(blocks, target, block),
        offload_bytes=offload_bytes,
        offload_used=offload_used,
    )
    if kv_short:
        reasons.append(_shortfall(req, budget, cap, need_blocks))
    return cap


def _offload_warnings(req: PlanRequest, offload_bytes: int) -> list[str]:
    out = [
        f"--cpu-offload-gb {offload_bytes // GIB}: weights stream over PCIe every token "
        "(seed 001: 19 -> 1.6 tok/s); a last resort"
    ]
    if req.host_wsl2:
        out.append(
            "WSL2 has no pinned memory: the V1 engine cannot offload, so the plan sets "
            "VLLM_USE_V1=0 (seed 001; only vLLM < 0.11 has V0)"
        )
    return out


def _shortfall(req: PlanRequest, budget: Budget, cap: Capacity, need_blocks: int) -> str:
    """Why the KV share is too small: weights alone overflow, no useful context, or this context."""
    weights_room = budget.requested - budget.overhead
    if req.gpu is not None and budget.weights > weights_room:
        return (
            f"weights need {_gib(budget.weights)} per GPU but the budget leaves {_gib(max(weights_room, 0))} "
            f"({req.gpu_memory_utilization:g} x {_gib(budget.total)} minus {_gib(budget.overhead)} "
            "for activations, sampler, CUDA graphs and workspaces)."
        )
    left = _gib(max(cap.kv_cache_bytes, 0))
    if req.context is None:
        return (
            f"only {cap.kv_tokens:,} tokens of KV cache fit ({left}); a useful deployment needs "
            f">= {MIN_USEFUL_CONTEXT:,}."
        )
    need_bytes = need_blocks * budget.block_size * budget.kv_per_token
    who = f"{req.concurrency} requests" if req.concurrency > 1 else "one request"
    verb = "needs" if req.concurrency == 1 else "need"
    return (
        f"{who} of {cap.target:,} tokens {verb} {_gib(need_bytes)} of KV cache per GPU; {left} is left after "
        f"weights and overhead (max context {cap.max_context:,}, {cap.concurrency:.2f} requests at {cap.target:,})."
    )


def offload_problem(gpu: GpuSpec, req: PlanRequest) -> str | None:
    """Why --cpu-offload-gb cannot work here, or None."""
    if gpu.pcie_gen is None or gpu.unified_memory:
        return f"{gpu.name} has unified memory; offloading to 'CPU' memory frees nothing"
    if req.host_wsl2 and not has_v0_engine(req.vllm_version):
        return (
            f"WSL2 has no pinned memory and vLLM {req.vllm_version}'s V1 engine needs it for "
            "--cpu-offload-gb (seed 001: 'V1 CPU offloading requires uva (pin memory) support'); "
            "V0 was removed in 0.11"
        )
    return None
