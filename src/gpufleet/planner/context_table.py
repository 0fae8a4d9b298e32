"""A context-vs-memory table like seed 004's, computed from one plan's KV numbers."""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.planner.blocks import kv_bytes_for, max_concurrency
from gpufleet.planner.types import Plan


@dataclass(frozen=True)
class ContextRow:
    """One context length: KV it takes per GPU, how many such requests fit, YaRN or not."""

    context: int
    kv_bytes_per_request: int
    max_concurrency: float
    fits: bool
    needs_yarn: bool


def default_contexts(plan: Plan) -> list[int]:
    """4K, 8K, ... up to the longest window the model can run (with YaRN x4 where it has a recipe)."""
    model = plan.model
    top = model.max_position_embeddings
    if model.yarn_original_context:
        top = max(top, model.yarn_original_context * 4)
    contexts, n = [], 4096
    while n <= top:
        contexts.append(n)
        n *= 2
    if model.max_position_embeddings not in contexts and model.max_position_embeddings <= top:
        contexts.append(model.max_position_embeddings)
    return sorted(c for c in contexts if c >= 1)


def context_table(plan: Plan, contexts: list[int] | None = None) -> list[ContextRow]:
    """Rows for `contexts` (default: default_contexts) on the plan's KV cache."""
    rows = []
    for context in contexts or default_contexts(plan):
        conc = max_concurrency(plan.num_blocks, context, plan.block_size)
        rows.append(
            ContextRow(
                context=context,
                kv_bytes_per_request=kv_bytes_for(context, plan.kv_bytes_per_token, plan.block_size),
                max_concurrency=conc,
                fits=conc >= 1,
                needs_yarn=context > plan.model.max_position_embeddings,
            )
        )
    return rows
