"""Context beyond the native window: when YaRN is needed and with which factor.

Qwen's recipe (vllm-facts.md §4; docs.vllm.ai features/context_extension): YaRN scales the
pre-training context (32768) by a static factor; use factor = needed / 32768 (4.0 for 131072,
2.0 for 65536), and only for long-context deployments because it costs quality on short texts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpufleet.catalog import ModelSpec


@dataclass(frozen=True)
class Yarn:
    """The YaRN decision for one context length."""

    needed: bool
    factor: float | None = None
    original_context: int | None = None
    supported: bool = True


def yarn_for(model: ModelSpec, context: int) -> Yarn:
    """Whether `context` exceeds the model's max_position_embeddings, and the YaRN factor if so.

    The factor is rounded up to one decimal so original * factor always covers the context.
    """
    if context <= model.max_position_embeddings:
        return Yarn(needed=False)
    original = model.yarn_original_context
    if not original:
        return Yarn(needed=True, supported=False)
    factor = math.ceil(context / original * 10) / 10
    return Yarn(needed=True, factor=max(factor, 1.0), original_context=original)
