"""Parameter counts and weight sizes derived from config.json numbers.

Used to check the catalog's parameter counts against the model cards, and to estimate a
checkpoint's size when no measured size is recorded.
"""

from __future__ import annotations

# AWQ/GPTQ int4 with group size 128: 64 B of packed weights + a fp16 scale (2 B) + a 4-bit
# zero point (0.5 B) per 128 weights. Embeddings and lm_head stay 16-bit.
# Checks: Qwen3-32B-AWQ -> 19.32 GB (seed 000 says ~19.3 GB);
# Qwen3-235B-A22B AWQ -> 123.9 GB = 115.4 GiB (seed 004 says 116 "GB", which matches as GiB).
INT4_GROUP128_BYTES_PER_PARAM = (64 + 2 + 0.5) / 128
BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}


def count_params(
    *,
    layers: int,
    hidden_size: int,
    attention_heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate_size: int,
    vocab_size: int,
    tie_word_embeddings: bool,
    experts: int = 0,
    moe_intermediate_size: int = 0,
    experts_per_token: int = 0,
    qkv_bias: bool = False,
    qk_norm: bool = False,
) -> tuple[int, int, int]:
    """(total, active, embedding) parameter counts of a Llama/Qwen-style decoder.

    >>> count_params(layers=30, hidden_size=576, attention_heads=9, kv_heads=3, head_dim=64,
    ...              intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)[0]
    134515008
    """
    q = hidden_size * attention_heads * head_dim
    kv = 2 * hidden_size * kv_heads * head_dim
    o = attention_heads * head_dim * hidden_size
    bias = (attention_heads + 2 * kv_heads) * head_dim if qkv_bias else 0
    # Qwen3 adds RMSNorm on q and k per head (qk_norm); Qwen2 has a bias on q, k, v instead.
    norms = 2 * hidden_size + (2 * head_dim if qk_norm else 0)
    attn = q + kv + o + bias + norms
    if experts:
        expert = 3 * hidden_size * moe_intermediate_size
        router = hidden_size * experts
        mlp_total = experts * expert + router
        mlp_active = experts_per_token * expert + router
    else:
        mlp_total = mlp_active = 3 * hidden_size * intermediate_size
    embedding = vocab_size * hidden_size
    heads = embedding * (1 if tie_word_embeddings else 2)
    total = layers * (attn + mlp_total) + heads + hidden_size
    active = layers * (attn + mlp_active) + heads + hidden_size
    return total, active, heads


def estimate_weight_bytes(quantization: str, params_total: int, embedding_params: int) -> int:
    """Estimated checkpoint bytes for a quantization (bf16, fp8, w8a8, awq, gptq)."""
    if quantization in ("awq", "gptq"):
        body = params_total - embedding_params
        return int(body * INT4_GROUP128_BYTES_PER_PARAM + embedding_params * 2)
    if quantization in ("fp8", "w8a8"):
        # Linear weights fp8 (+ per-channel scales, negligible); embeddings/lm_head stay bf16.
        return int((params_total - embedding_params) * 1.0 + embedding_params * 2)
    per_param = BYTES_PER_PARAM.get(quantization)
    if per_param is None:
        raise ValueError(f"no size rule for quantization {quantization!r}")
    return int(params_total * per_param)
