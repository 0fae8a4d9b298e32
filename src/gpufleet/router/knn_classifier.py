"""An optional `auto` tier classifier: k nearest labelled prompts by embedding (pure; the caller embeds).

The rules in classifier.py are the fast default. This one needs an embeddings model — through the gateway's
own `/v1/embeddings`, e.g. the embedded SmolLM2 started with `extra_args: {embedding: true, pooling_type: 1}` —
and a labelled set (tiers/data/tier_prompts.yaml). Accuracy and cost of both: docs/router-auto.md.

    >>> knn = KnnTierClassifier([([1.0, 0.0], Tier.ROUTINE), ([0.0, 1.0], Tier.COMPLEX)], k=1)
    >>> knn.classify_vector([0.9, 0.2])
    <Tier.ROUTINE: 'routine'>
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from gpufleet.router.classifier import Tier

EMBED_CHARS = 600  # what is embedded of a turn: its start, where the ask is (code: up to ~310 tokens)


def request_text(payload: Mapping[str, Any], max_chars: int | None = EMBED_CHARS) -> str:
    """The text to embed for a chat or completions body: the last user message (or the prompt), bounded."""
    messages = payload.get("messages")
    text: Any = payload.get("prompt") or ""
    if isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1].get("content") if users else ""
    if isinstance(text, list):
        text = "\n".join(p.get("text", "") for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
    return text[:max_chars] if isinstance(text, str) and text.strip() else "(empty)"


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class KnnTierClassifier:
    """Votes among the `k` labelled examples most cosine-similar to a request's embedding (weighted by similarity)."""

    def __init__(self, examples: Sequence[tuple[Sequence[float], Tier]], k: int = 5) -> None:
        if not examples:
            raise ValueError("the kNN classifier needs at least one labelled example")
        if k < 1:
            raise ValueError(f"k must be at least 1 (got {k})")
        self.k = k
        self._examples = [(_unit(vector), tier) for vector, tier in examples]

    def classify_vector(self, vector: Sequence[float]) -> Tier:
        """The tier of an embedded request; ties go to the higher tier (a miss upward costs less)."""
        query = _unit(vector)
        scored = sorted(
            ((sum(a * b for a, b in zip(query, ex, strict=True)), tier) for ex, tier in self._examples),
            key=lambda item: item[0],
            reverse=True,
        )
        votes: dict[Tier, float] = defaultdict(float)
        for similarity, tier in scored[: self.k]:
            votes[tier] += max(similarity, 0.0) + 1e-9
        order = list(Tier)
        return max(votes, key=lambda tier: (votes[tier], order.index(tier)))
