"""KV-cache blocks to tokens and concurrency, as vLLM counts them (v1/core/kv_cache_utils.py)."""

from __future__ import annotations

from gpufleet.catalog import ModelSpec
from gpufleet.planner.memory import BLOCK_SIZE_CPU, kv_bytes_per_token, kv_dtype_bytes

# A deployment whose window is smaller than this is not useful for chat (system prompt + history).
MIN_USEFUL_CONTEXT = 2048


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative ints."""
    return -(-a // b)


def num_blocks(kv_cache_bytes: int, kv_per_token: int, block_size: int) -> int:
    """Whole KV blocks that fit: vLLM's `available // page_size // num_layers`."""
    if kv_cache_bytes <= 0 or kv_per_token <= 0:
        return 0
    return kv_cache_bytes // (block_size * kv_per_token)


def max_concurrency(blocks: int, context: int, block_size: int) -> float:
    """Requests of `context` tokens that fit at once ('Maximum concurrency for N tokens per request')."""
    if context <= 0:
        return 0.0
    return blocks / cdiv(context, block_size)


def kv_bytes_for(context: int, kv_per_token: int, block_size: int) -> int:
    """KV bytes one request of `context` tokens occupies (whole blocks)."""
    return cdiv(context, block_size) * block_size * kv_per_token


def predict_cpu_kv_tokens(
    model: ModelSpec,
    kv_space_bytes: int,
    *,
    block_size: int = BLOCK_SIZE_CPU,
    kv_cache_dtype: str = "auto",
    tensor_parallel: int = 1,
) -> int:
    """KV tokens vLLM's CPU backend reports for VLLM_CPU_KVCACHE_SPACE = kv_space_bytes.

    The CPU worker's KV budget is exactly VLLM_CPU_KVCACHE_SPACE GiB (platforms/cpu.py), its
    default block is 128 tokens, and fp8 KV falls back to 'auto' there. SmolLM2-135M with 1 GiB:
    2*30*3*64*2 = 23,040 B/token -> 1 GiB // (128*23,040) = 364 blocks -> 46,592 tokens, the
    number vLLM logged (reference/vllm-cpu.md); the unrounded 46,603 is off by the block rounding.
    """
    dtype = "auto" if kv_cache_dtype.startswith("fp8") else kv_cache_dtype
    per_token = kv_bytes_per_token(model, tensor_parallel, 1, kv_dtype_bytes(dtype))
    return num_blocks(kv_space_bytes, per_token, block_size) * block_size
