"""vLLM's per-GPU memory budget, term by term (vllm-facts.md §1).

vLLM (v1/worker/gpu_worker.py, utils/mem_utils.py) does:

    requested  = ceil(total * gpu_memory_utilization)       # total = what cudaMemGetInfo reports
    non_kv     = weights + non-torch (cuBLAS/NCCL)
                 + activation peak of the profile batch (profile_run: max_num_batched_tokens tokens)
                 + sampler (V1 _dummy_sampler_run: max_num_seqs rows of fp32 logits)
    kv_cache   = requested - non_kv - cudagraph_estimate    # graphs subtracted since v0.21
    num_blocks = kv_cache // (block_size * kv_bytes_per_token)

Which of these a vLLM version has, and from when, is in planner/vllm_versions.py; the constants
were fitted to the real start-up logs in tests/data/planner_logs/ (docs/planner.md, Accuracy).

The CUDA context lives outside `requested`; it matters for the start-up check, which refuses to
start when free memory < requested. Constants below are estimates of what vLLM measures; each
says where it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.catalog import GIB, GpuSpec, ModelSpec
from gpufleet.planner.vllm_versions import (
    DEFAULT_VLLM_VERSION,
    budgets_cudagraphs,
    has_gpu_sized_batch_defaults,
    has_pre_017_profile_peak,
    is_v1_default,
    pytorch_sampler_by_default,
    since,
)

MIB = 1 << 20
DEFAULT_UTILIZATION = 0.92  # vLLM 0.26/0.33 default; older releases (and the seeds) used 0.90
BLOCK_SIZE_GPU = 16  # CUDA default block size (vllm-facts.md §1)
BLOCK_SIZE_CPU = 128  # vllm/platforms/cpu.py: `if cache_config.block_size is None: block_size = 128`

# cuBLAS/cuDNN workspaces etc. that vLLM counts as "non-torch" memory; NCCL buffers come on top
# once there is more than one rank. vLLM logs these as 'non-torch memory' (0.1-0.5 GiB typical).
NON_TORCH_BYTES = int(0.15 * GIB)
# From 0.18 the single-GPU figure is ~0.25 GiB (llm-d-planner's H100 sweep: Qwen3-14B 0.13 on
# 0.15-0.17, 0.25 on 0.18; 0.24-0.27 for every TP=1 run on 0.19).
NON_TORCH_BYTES_018 = int(0.25 * GIB)
NCCL_BYTES = int(0.35 * GIB)
# SXM boards at TP>1: vLLM's custom all-reduce buffers and NCCL's NVLS/NVLink channels took
# ~2 GiB per GPU in issue 15's H100 logs (vs ~0.5 GiB over PCIe).
NVLINK_COMM_BYTES = int(1.85 * GIB)  # 0.19 on H100: 2.06 (TP=2), 2.13 (TP=4), 2.09 (72B TP=2) in total
# TP across nodes (Ray): NCCL reaches the other node over its network transport, whose per-channel
# send/recv buffers sit in GPU memory (GPUDirect RDMA), and vLLM keeps two communicators (torch's
# process group and its own PyNccl), each with them; the custom all-reduce that shares buffers over
# NVLink/P2P is off across nodes. Issue 24's Ray log (Qwen2-7B, TP=2 over two nodes, 2x A100-40GB,
# util 0.5: dennislee22/vLLM-benchmarking, a fit-set fixture) kept ~0.85 GiB per GPU less KV than the
# single-node PCIe term predicts (+8%); that one figure is this term. The same source's single-node
# TP=2 logs (A100-80GB, custom all-reduce off too) need no such term: the difference is the nodes.
CROSS_NODE_NCCL_BYTES = int(0.85 * GIB)
# V0 switched chunked prefill on by itself for contexts above this (engine/arg_utils.py, V0).
V0_CHUNKED_PREFILL_ABOVE = 32768
# V0's eager forward: MLP tensors alive at the peak, per token (see v0_eager_mlp_bytes_per_token).
V0_EAGER_MLP_INTERMEDIATES = 3  # gate_up output (2 x intermediate) + SiluAndMul output (1 x)
V0_EAGER_MLP_HIDDEN = 2  # the residual and the normed hidden state the decoder layer still holds
# Copies of the fp32 logits the dummy sampler run holds at its peak (see sampler_bytes).
SAMPLER_COPIES = 1.0
SAMPLER_COPIES_PYTORCH = 2.4
# 0.15 and 0.16 profiled a forward peak ~5x today's (Qwen3-14B on H100: 5.64 GiB of torch peak
# vs 2.23 on 0.17; the sampler part is the same) - see activation_peak_bytes.
PRE_017_FORWARD_FACTOR = 5
# The CUDA context (+ loaded kernels) is taken before vLLM's snapshot, so it is outside the budget.
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
# CUDA graph pool vLLM estimates before sizing the KV cache (0.21+): a fixed part plus a part
# per layer that grows with the hidden size. Fit to the two estimates in the fixture logs:
# 'Estimated CUDA graph memory: 0.52 GiB' (Qwen3-8B: 36 layers, hidden 4096, LMCache#3430) and
# '0.42 GiB (estimated)' (Qwen3-4B: 36 layers, hidden 2560, vllm#57047).
CUDAGRAPH_BASE_BYTES = int(0.253 * GIB)
CUDAGRAPH_PER_LAYER_BYTES = int(7.6 * MIB)  # at hidden size 4096; scales linearly with it

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


@dataclass(frozen=True)
class ProfileBatch:
    """The dummy batch vLLM's memory profile runs: `tokens` through the model, `seqs` sampled."""

    tokens: int
    seqs: int
    why: str


def default_batching(
    gpu: GpuSpec | None, vllm_version: str = DEFAULT_VLLM_VERSION, *, offline: bool = False
) -> tuple[int, int]:
    """vLLM's defaults for (max_num_batched_tokens, max_num_seqs) on this GPU and version.

    engine/arg_utils.py get_batch_defaults (0.9+): GPUs with >= 70 GiB that are not A100 get
    8192 tokens / 1024 seqs for `vllm serve` (16384 for the offline LLM class); others 2048 / 256
    (8192 / 256 offline). 0.8.x's V1 engine used 2048 / 1024 for the API server (issue 15 logs:
    the sampler of 1024 rows is what V1 profiled on small cards). The CPU backend uses the small set.
    """
    if not is_v1_default(vllm_version):
        return 2048, 256
    big = gpu is not None and not gpu.unified_memory and gpu.usable_bytes >= 70 * GIB and "a100" not in gpu.name
    if not has_gpu_sized_batch_defaults(vllm_version):
        return (16384 if offline else 2048), 1024
    # Unified-memory GPUs (GB10) get the small set: NVML cannot report their memory, so
    # get_batch_defaults' `except` branch sees device_memory = 0.
    if big:
        return (16384 if offline else 8192), 1024
    return (8192 if offline else 2048), 256


def profile_batch(
    vllm_version: str,
    max_model_len: int,
    max_num_batched_tokens: int | None,
    max_num_seqs: int | None,
    gpu: GpuSpec | None,
    *,
    offline: bool = False,
) -> ProfileBatch:
    """What vLLM's profile run pushes through the model (worker profile_run / _dummy_run).

    V1 runs `max_num_batched_tokens` tokens (chunked prefill is always on). V0 without chunked
    prefill must fit a whole prompt in one step, so its batch is max(max_model_len, 2048)
    (config.py SchedulerConfig); V0 turned chunked prefill on by itself above 32K context.
    """
    tokens_default, seqs_default = default_batching(gpu, vllm_version, offline=offline)
    seqs = max_num_seqs or seqs_default
    if is_v1_default(vllm_version):
        return ProfileBatch(max_num_batched_tokens or tokens_default, seqs, "max_num_batched_tokens (V1)")
    if max_num_batched_tokens:
        return ProfileBatch(max_num_batched_tokens, seqs, "--max-num-batched-tokens (V0)")
    if max_model_len > V0_CHUNKED_PREFILL_ABOVE:
        return ProfileBatch(2048, seqs, "V0 chunked prefill (context > 32K): 2048")
    return ProfileBatch(max(max_model_len, 2048), seqs, "V0 without chunked prefill: max(max_model_len, 2048)")


def activation_peak_bytes(
    model: ModelSpec, tensor_parallel: int, profile_tokens: int, vllm_version: str = DEFAULT_VLLM_VERSION
) -> int:
    """Peak transient memory of the profile forward pass over `profile_tokens` tokens.

    Dense: the MLP gate+up output (2 * intermediate per token, per TP rank) plus a few
    hidden-size buffers, 16-bit. MoE: fused_moe's three intermediate caches per routed expert
    (gate+up, activation, down output: top_k * (3 * moe_intermediate / TP + hidden)). V0 (< 0.8,
    eager): v0_eager_mlp_bytes_per_token.
    Checks: Qwen3-14B at 8192 tokens on 0.17/0.18 = 0.84 GiB forward + 1.39 sampler = 2.23 GiB, as
    logged; 0.15/0.16 logged 5.64 GiB, 5x the forward part (PRE_017_FORWARD_FACTOR, issue 15).
    """
    if model.is_moe:
        per_expert = 3 * model.moe_intermediate_size // tensor_parallel + model.hidden_size
        per_token = (model.experts_per_token * per_expert + 4 * model.hidden_size) * 2
    elif not is_v1_default(vllm_version):
        per_token = v0_eager_mlp_bytes_per_token(model, tensor_parallel)
    else:
        per_token = (2 * model.intermediate_size // tensor_parallel + 4 * model.hidden_size) * 2
    peak = profile_tokens * per_token
    if has_pre_017_profile_peak(vllm_version):
        peak *= PRE_017_FORWARD_FACTOR
    return peak


def v0_eager_mlp_bytes_per_token(model: ModelSpec, tensor_parallel: int) -> int:
    """Bytes per token the V0 engine's eager profile forward holds at its peak (dense models).

    V0_EAGER_MLP_INTERMEDIATES (3) x intermediate/TP + V0_EAGER_MLP_HIDDEN (2) x hidden, 16-bit.
    Physical reason: V0 runs the model eagerly (no torch.compile, no fused graph), so inside the MLP
    the gate_up output [T, 2I] is still alive when SiluAndMul allocates its output [T, I], while the
    decoder layer still holds the residual and the normed hidden state [T, H] each
    (model_executor/models/llama.py and qwen2.py: `x, _ = self.gate_up_proj(x); x = self.act_fn(x)`).
    Derived from those tensor lifetimes, not fitted: the fitting set holds no V0 log. V0 profiles the
    whole max_model_len in one batch, so this per-token figure is multiplied by up to 32K tokens.
    """
    return (
        V0_EAGER_MLP_INTERMEDIATES * model.intermediate_size // tensor_parallel
        + V0_EAGER_MLP_HIDDEN * model.hidden_size
    ) * 2


def sampler_bytes(model: ModelSpec, profile_seqs: int, vllm_version: str, *, pytorch_sampler: bool = False) -> int:
    """The V1 dummy sampler run: `max_num_seqs` rows of fp32 logits, plus the sampler's copies.

    gpu_model_runner._dummy_sampler_run samples one token per sequence from fp32 logits
    (rows x vocab x 4 B: 0.14 GiB at 256 x 152K, 0.58 GiB at 1024 rows). FlashInfer's top-k/top-p
    kernel works in place (0.8.5 logs of Qwen3-32B on 2x L20 and Qwen3-30B-A3B on 4x A10 fit
    one copy). From 0.15 vLLM logs 'FlashInfer top-p/top-k sampling is available but disabled by
    default' and the PyTorch sampler sorts (values + int64 indices): 2.4 copies fit 0.19's H100
    runs (Qwen2.5-7B: 0.80 GiB forward + 1.39 sampler = 2.21 GiB logged).
    V0 has no separate sampler profile: its sampler peak is inside the activation figure.
    """
    if not is_v1_default(vllm_version):
        return 0
    pytorch = pytorch_sampler or pytorch_sampler_by_default(vllm_version)
    copies = SAMPLER_COPIES_PYTORCH if pytorch else SAMPLER_COPIES
    return int(profile_seqs * model.vocab_size * 4 * copies)


def v0_sampler_bytes(model: ModelSpec, profile_seqs: int) -> int:
    """V0's profile samples all `max_num_seqs` dummy sequences inside the forward's peak."""
    return int(profile_seqs * model.vocab_size * 4 * SAMPLER_COPIES)


def cudagraph_bytes(model: ModelSpec, pipeline_parallel: int, enforce_eager: bool, vllm_version: str) -> int:
    """CUDA graph pool vLLM subtracts before sizing the KV cache.

    Only versions that budget it (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS, default from 0.21);
    earlier ones captured graphs after sizing the cache, out of the (1 - utilization) headroom.
    """
    if enforce_eager or not budgets_cudagraphs(vllm_version):
        return 0
    per_layer = CUDAGRAPH_PER_LAYER_BYTES * model.hidden_size // 4096
    return CUDAGRAPH_BASE_BYTES + per_layer * layers_per_stage(model, pipeline_parallel)


def non_torch_bytes(
    world_size: int, gpu: GpuSpec | None = None, vllm_version: str = DEFAULT_VLLM_VERSION, *, nodes: int = 1
) -> int:
    """Non-torch memory: library workspaces, plus NCCL (and NVLink all-reduce) buffers with ranks,
    plus NCCL's network-transport buffers when the ranks span nodes (CROSS_NODE_NCCL_BYTES)."""
    base = NON_TORCH_BYTES_018 if since("non_torch_018", vllm_version) else NON_TORCH_BYTES
    if world_size <= 1:
        return base
    cross_node = CROSS_NODE_NCCL_BYTES if nodes > 1 else 0
    if gpu is not None and gpu.nvlink:
        return base + NVLINK_COMM_BYTES + cross_node
    return base + NCCL_BYTES + cross_node


def requested_bytes(gpu: GpuSpec, gpu_memory_utilization: float) -> int:
    """vLLM's budget for one GPU: ceil(total * utilization) (request_memory in gpu_worker.py)."""
    return math.ceil(gpu.usable_bytes * gpu_memory_utilization)


def max_startable_utilization(gpu: GpuSpec) -> float:
    """The highest utilization vLLM's start-up check accepts on an otherwise idle GPU.

    vLLM (gpu_worker.py request_memory) only requires free memory at start >= util * total, where
    free = total - its own CUDA context - what the host holds (unified memory: OS, page cache).
    Rounded down to 4 decimals, not 2: rounding to 0.97 refused the 0.9764 that vLLM 0.21 started
    Qwen3-8B with on a 24 GB RTX A5000 (LMCache#3430).
    """
    free = gpu.usable_bytes - CUDA_CONTEXT_BYTES - gpu.host_reserved_bytes
    return math.floor(free / gpu.usable_bytes * 10_000) / 10_000


def suggested_utilization(gpu: GpuSpec) -> float:
    """The startable limit rounded down to a flag a person would type (0.01 steps)."""
    return math.floor(max_startable_utilization(gpu) * 100) / 100
