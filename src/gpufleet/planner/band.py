"""The band around the planned KV-cache tokens: how far real vLLM start-ups land from the plan.

The widths are the worst residuals of the start-up log corpus (tests/data/planner_logs/fixtures.yaml,
fitting and test set; docs/planner.md, Accuracy), rounded up to 0.1% so that, after rounding to whole
blocks, every log that set a width is inside:

- above (one width for every plan): real vLLM kept more KV than planned by up to 6.95%, on an L4
  with Qwen3-14B-AWQ on vLLM 0.28 (ddiiwoong/newblog, a test-set log). The same launch on the same
  card logged 59,632 tokens in one run and 67,696 in another (9.10 vs 10.33 GiB of KV): this side
  is run-to-run variance, which no term can predict. Before that log the worst was LMCache#3430
  (RTX A5000, vLLM 0.21, fit set: 4.55%).
- below, per engine. The V0 engine (vLLM < 0.8) profiled the whole max_model_len in one eager batch,
  so its activation term, the most uncertain one, is up to ~3 GiB where V1's is under 1 GiB, and
  anything another process takes while it profiles comes out of the KV cache. V0's worst is
  vllm#13061 (2x RTX 4090, V0, another process held ~1.2 GiB of one card: 13.77% below the plan);
  V1's is the 59,632-token run of the L4 launch above (5.79% below).

So the half-width is 6.4% for V1 plans (every vLLM from 0.8, and the only engine from 0.11) and
10.4% for V0 plans. Plans that warn their figure is an upper bound have no low end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.planner.blocks import cdiv
from gpufleet.planner.types import KvBand
from gpufleet.planner.vllm_versions import DEFAULT_VLLM_VERSION, is_v1_default


@dataclass(frozen=True)
class BandWidths:
    """How far under (`below`) and over (`above`) the point estimate real start-ups land, and why."""

    below: float
    above: float
    basis: str


KV_BAND_ABOVE = 0.070
KV_BAND_BELOW = 0.058  # V1 (vLLM >= 0.8), the default engine
KV_BAND_BELOW_V0 = 0.138
_ABOVE_BASIS = "+7.0% (an L4 launch on vLLM 0.28 that logged 59,632 and 67,696 tokens in two runs)"
V1_BAND = BandWidths(
    KV_BAND_BELOW,
    KV_BAND_ABOVE,
    "fitting- and test-set residuals of the start-up log corpus: -5.8% (V1; that L4 launch's smaller run) to "
    + _ABOVE_BASIS,
)
V0_BAND = BandWidths(
    KV_BAND_BELOW_V0,
    KV_BAND_ABOVE,
    "test-set residuals of the start-up log corpus: -13.8% (V0; vllm#13061, another process on one of two RTX "
    "4090s during the profile) to " + _ABOVE_BASIS,
)


def band_widths(vllm_version: str = DEFAULT_VLLM_VERSION) -> BandWidths:
    """The band for plans of this vLLM version: V0 (< 0.8) profiles a whole max_model_len batch eagerly."""
    return V1_BAND if is_v1_default(vllm_version) else V0_BAND


def band_tokens(kv_tokens: int, block_size: int, fraction: float) -> int:
    """`kv_tokens * (1 + fraction)` rounded down to whole KV blocks (vLLM allocates blocks)."""
    return max(0, math.floor(kv_tokens * (1 + fraction) / block_size)) * block_size


def concurrency_at(tokens: int, context: int, block_size: int) -> float:
    """vLLM's 'Maximum concurrency': blocks / blocks one request of `context` tokens needs."""
    if context <= 0:
        return 0.0
    return (tokens // block_size) / cdiv(context, block_size)


def kv_band(
    kv_tokens: int,
    context: int,
    limit: int,
    block_size: int,
    *,
    upper_bound_only: bool,
    vllm_version: str = DEFAULT_VLLM_VERSION,
) -> KvBand:
    """The band around `kv_tokens`, with max context and concurrency at `context` at both ends.

    `limit` is the model's window (max_position_embeddings, or the YaRN one); `upper_bound_only`
    drops the low end for plans that warn their KV figure is an upper bound; `vllm_version` picks
    the V0 or V1 widths (band_widths).
    """
    widths = band_widths(vllm_version)
    high = band_tokens(kv_tokens, block_size, widths.above)
    low = None if upper_bound_only else band_tokens(kv_tokens, block_size, -widths.below)
    return KvBand(
        kv_cache_tokens_low=low,
        kv_cache_tokens_high=high,
        max_context_low=None if low is None else min(low, limit),
        max_context_high=min(high, limit),
        max_concurrency_low=None if low is None else concurrency_at(low, context, block_size),
        max_concurrency_high=concurrency_at(high, context, block_size),
        below=widths.below,
        above=widths.above,
        basis=widths.basis if low is not None else widths.basis + "; no low end: the plan's figure is an upper bound",
    )
