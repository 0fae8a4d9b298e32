"""vLLM's per-GPU memory budget, term by term (vllm-facts.md §1).

vLLM (v1/worker/gpu_worker.py, utils/mem_utils.py) does:

    requested  = ceil(total * gpu_memory_utilization)       # total = what cudaMemGetInfo reports
    non_kv     = weights + non-torch (cuBLAS/NCCL) + activation peak of a dummy forward
    kv_cache   = requested - non_kv - cudagraph_estimate    # graphs subtracted since v0.21
    num_blocks = kv_cache // (block_size * kv_bytes_per_token)

The CUDA context lives outside `requested`; it matters for the start-up check, which refuses to
start when free memory < requested. Constants below are estimates of what vLLM measures; each
says where it comes from.
"""

from __future__ import annotations

import math

from gpufleet.catalog import GIB, GpuSpec, ModelSpec

MIB = 1 << 20
DEFAULT_UTILIZATION = 0.92  # vLLM 0.26/0.33 default; older releases (and the seeds) used 0.90
BLOCK_SIZE_GPU = 16  # CUDA default block size (vllm-facts.md §1)
BLOCK_SIZE_CPU = 128  # vllm/platforms/cpu.py: `if cache_config.block_size is None: block_size = 128`

# cuBLAS/cuDNN workspaces etc. that vLLM counts as "non-torch" memory; NCCL buffers come on top
# once there is more than one rank. vLLM logs these as 'non-torch memory' (0.1-0.5 GiB typical).
NON_TORCH_BYTES = int(0.15 * GIB)
NCCL_BYTES = int(0.35 * GIB)
# The CUDA context (+ loaded kernels) is taken before vLLM's snapshot, so it is outside the budget.
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
# CUDA graph pool: vLLM captures ~50 batch sizes; the pool grows with layers. Rough fit to logs
# ("Graph capturing finished ... took 0.4-0.7 GiB" for 7-32B models).
CUDAGRAPH_BASE_BYTES = 64 * MIB
CUDAGRAPH_PER_LAYER_BYTES = 8 * MIB

KV_DTYPE_BYTES = {
    "auto": 2,
    "bfloat16": 2,
    "float16": 2,
    "fp16": 2,
    "bf16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    # vLLM's CPU backend: the KV cache follows --dtype float32 (bf16 answers gibberish on some CPUs,
    # tests/test_vllm_gateway.py). vLLM's --kv-cache-dtype has no float32, so GPU plans refuse it.
    "float32": 4,
}


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per KV element: 'auto' follows the model dtype (bf16/fp16 = 2), fp8 variants = 1, float32 (CPU) = 4."""
    return KV_DTYPE_BYTES[kv_cache_dtype]


def kv_heads_per_gpu(model: ModelSpec, tensor_parallel: int) -> int:
    """KV heads one rank holds: split across TP ranks, replicated once TP > kv_heads."""
    return max(1, model.kv_heads // tensor_parallel)


def layers_per_stage(model: ModelSpec, pipeline_parallel: int) -> int:
    """Layers on the busiest pipeline stage (vLLM splits layers as evenly as it can)."""
    return math.ceil(model.layers / pipeline_parallel)


def kv_bytes_per_token(
    model: ModelSpec, tensor_parallel: int = 1, pipeline_parallel: int = 1, dtype_bytes: int = 2
) -> int:
    """KV bytes one token costs on one GPU: 2 (K and V) * layers * kv_heads/GPU * head_dim * dtype.

    From AttentionSpec.page_size_bytes (v1/kv_cache_interface.py) divided by block_size.
    """
    return (
        2
        * layers_per_stage(model, pipeline_parallel)
        * kv_heads_per_gpu(model, tensor_parallel)
        * model.head_dim
        * dtype_bytes
    )


def default_batching(gpu: GpuSpec | None) -> tuple[int, int]:
    """`vllm serve` defaults for (max_num_batched_tokens, max_num_seqs) on this GPU.

    engine/arg_utils.py get_batch_defaults: GPUs with >= 70 GiB that are not A100 get 8192 tokens /
    1024 seqs for the API server; others 2048 / 256. The CPU backend uses the small set.
    """
    # Unified-memory GPUs (GB10) get the small set: NVML cannot report their memory, so
    # get_batch_defaults' `except` branch sees device_memory = 0.
    if gpu is not None and not gpu.unified_memory and gpu.usable_bytes >= 70 * GIB and "a100" not in gpu.name:
        return 8192, 1024
    return 2048, 256


def activation_peak_bytes(
    model: ModelSpec, tensor_parallel: int, max_num_batched_tokens: int, max_num_seqs: int
) -> int:
    """Peak transient memory of vLLM's profiling forward pass (dummy batch) plus sampler.

    The dummy batch has max_num_batched_tokens tokens: the MLP gate+up output dominates
    (2 * intermediate per token, per TP rank; for MoE the routed experts' share), plus a few
    hidden-size buffers. The sampler run holds max_num_seqs rows of fp32 logits twice.
    """
    if model.is_moe:
        mlp = 2 * model.moe_intermediate_size * model.experts_per_token // tensor_parallel
    else:
        mlp = 2 * model.intermediate_size // tensor_parallel
    per_token = (mlp + 4 * model.hidden_size) * 2
    logits = max_num_seqs * model.vocab_size * 4 * 2
    return max_num_batched_tokens * per_token + logits


def cudagraph_bytes(model: ModelSpec, pipeline_parallel: int, enforce_eager: bool) -> int:
    """CUDA graph pool vLLM reserves before sizing the KV cache (0 with --enforce-eager)."""
    if enforce_eager:
        return 0
    return CUDAGRAPH_BASE_BYTES + CUDAGRAPH_PER_LAYER_BYTES * layers_per_stage(model, pipeline_parallel)


def non_torch_bytes(world_size: int) -> int:
    """Non-torch memory: library workspaces, plus NCCL buffers when there are several ranks."""
    return NON_TORCH_BYTES + (NCCL_BYTES if world_size > 1 else 0)


def requested_bytes(gpu: GpuSpec, gpu_memory_utilization: float) -> int:
    """vLLM's budget for one GPU: ceil(total * utilization) (request_memory in gpu_worker.py)."""
    return math.ceil(gpu.usable_bytes * gpu_memory_utilization)


def max_startable_utilization(gpu: GpuSpec) -> float:
    """The highest utilization vLLM's start-up check accepts on an otherwise idle GPU.

    Free memory at start = total - CUDA context - what the host holds (unified memory: OS, page cache).
    """
    free = gpu.usable_bytes - CUDA_CONTEXT_BYTES - gpu.host_reserved_bytes
    return math.floor(free / gpu.usable_bytes * 100) / 100
