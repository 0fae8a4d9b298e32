"""The band around the planned KV-cache tokens: how far real vLLM start-ups land from the plan.

The widths are read off the *test set* of tests/data/planner_logs/fixtures.yaml (logs no constant
was fitted on; docs/planner.md, Accuracy), not off the logs the constants came from:

- below: the planner over-predicts more often than it under-predicts. The worst test-set log
  without an upper-bound warning is vllm#10517's 29K launch (RTX 3090, Llama-3.1-8B, V0): vLLM
  kept 18.83% less than the plan (planned +23.2%), because V0 profiles the whole max_model_len
  in one batch and that peak was larger than planned, and the host's non-torch memory was 0.35
  GiB. Before that log the worst was vllm#13061 (2x RTX 4090, V0, another process on one card:
  13.6% below).
- above: the fit set's worst is LMCache#3430 (RTX A5000, vLLM 0.21 with the LMCache connector:
  real 4.55% above the plan); the test set's worst under-prediction (an A10 on V0, 3.2% above)
  is inside it.
Both are rounded up to 0.1% so that, after rounding to whole blocks, the two logs are inside.
The half-width is therefore ~11.8%: wider than issue 24's 8% target, because unseen V0 and
consumer-card logs land up to 18.8% below the plan.

Real vLLM also varies between two starts of the same launch (issue 24: an L4 logged 59,632 and
67,696 tokens), so a band, not a single number, is the honest answer.
"""

from __future__ import annotations

import math

from gpufleet.planner.blocks import cdiv
from gpufleet.planner.types import KvBand

KV_BAND_BELOW = 0.189
KV_BAND_ABOVE = 0.046
BAND_BASIS = (
    "test-set residuals of the start-up log corpus: -18.9% (vllm#10517, RTX 3090, V0 profiling a "
    "29K-token batch) to +4.6% (LMCache#3430, fit set)"
)


def band_tokens(kv_tokens: int, block_size: int, fraction: float) -> int:
    """`kv_tokens * (1 + fraction)` rounded down to whole KV blocks (vLLM allocates blocks)."""
    return max(0, math.floor(kv_tokens * (1 + fraction) / block_size)) * block_size


def concurrency_at(tokens: int, context: int, block_size: int) -> float:
    """vLLM's 'Maximum concurrency': blocks / blocks one request of `context` tokens needs."""
    if context <= 0:
        return 0.0
    return (tokens // block_size) / cdiv(context, block_size)


def kv_band(kv_tokens: int, context: int, limit: int, block_size: int, *, upper_bound_only: bool) -> KvBand:
    """The band around `kv_tokens`, with max context and concurrency at `context` at both ends.

    `limit` is the model's window (max_position_embeddings, or the YaRN one); `upper_bound_only`
    drops the low end for plans that warn their KV figure is an upper bound.
    """
    high = band_tokens(kv_tokens, block_size, KV_BAND_ABOVE)
    low = None if upper_bound_only else band_tokens(kv_tokens, block_size, -KV_BAND_BELOW)
    return KvBand(
        kv_cache_tokens_low=low,
        kv_cache_tokens_high=high,
        max_context_low=None if low is None else min(low, limit),
        max_context_high=min(high, limit),
        max_concurrency_low=None if low is None else concurrency_at(low, context, block_size),
        max_concurrency_high=concurrency_at(high, context, block_size),
        below=KV_BAND_BELOW,
        above=KV_BAND_ABOVE,
        basis=BAND_BASIS if low is not None else BAND_BASIS + "; no low end: the plan's figure is an upper bound",
    )
