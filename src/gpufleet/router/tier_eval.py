"""How well a tier classifier agrees with a labelled set: accuracy per split and a confusion matrix (pure).

>>> items = [{"id": "a", "tier": "routine", "request": {}}, {"id": "b", "tier": "complex", "request": {}}]
>>> result = evaluate(items, lambda request: Tier.ROUTINE)
>>> result.right, result.total, result.misses
(1, 2, ['b: want complex, got routine'])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gpufleet.router.classifier import Tier


@dataclass
class Evaluation:
    """Agreement of a classifier with the labels: the confusion matrix (want, got) and the misses."""

    matrix: Counter[tuple[str, str]] = field(default_factory=Counter)
    misses: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.matrix.values())

    @property
    def right(self) -> int:
        return sum(n for (want, got), n in self.matrix.items() if want == got)

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0


def evaluate(
    items: Iterable[dict[str, Any]],
    classify: Callable[[dict[str, Any]], Tier],
    explain: Callable[[dict[str, Any]], str] | None = None,
) -> Evaluation:
    """Classify every labelled item; a miss reads "ID: want X, got Y" (plus `explain(request)` when given)."""
    result = Evaluation()
    for i, item in enumerate(items):
        got = classify(item["request"]).value
        result.matrix[item["tier"], got] += 1
        if got != item["tier"]:
            why = f" ({explain(item['request'])})" if explain is not None else ""
            result.misses.append(f"{item.get('id', f'prompts[{i}]')}: want {item['tier']}, got {got}{why}")
    return result


def format_confusion(matrix: Counter[tuple[str, str]]) -> str:
    """Rows are the label, columns the classifier's tier."""
    tiers = [t.value for t in Tier]
    rows = ["want \\ got " + "".join(f"{t:>10}" for t in tiers)]
    rows += [f"{want:<11}" + "".join(f"{matrix[want, got]:>10}" for got in tiers) for want in tiers]
    return "\n".join(rows)
