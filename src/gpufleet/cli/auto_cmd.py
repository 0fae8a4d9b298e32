"""`gpufleet auto check|explain`: see how the `auto` rules sort requests before you deploy a weight change.

    gpufleet auto explain "Prove that sqrt(2) is irrational."      # tier, score, the signals that fired
    gpufleet auto check --config gpufleet.yaml                      # accuracy on the shipped labelled set
    gpufleet auto check --config gpufleet.yaml --examples mine.yaml --misses

Both use the config's `router.auto` thresholds and weights (the defaults without --config, or when the config
has no `router.auto`). Exit codes: 0 done, 2 bad input (config, examples file).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from gpufleet.config import AutoTiers, load_config
from gpufleet.errors import ConfigError
from gpufleet.router.classifier import ComplexityClassifier, TierDecision
from gpufleet.router.tier_eval import evaluate, format_confusion
from gpufleet.tiers.labelled_set import SHIPPED, LabelledSetError, load_labelled

auto_app = typer.Typer(
    help="The `auto` tier rules: explain one request, or check them against labelled requests.", no_args_is_help=True
)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="use this config's router.auto settings")]


def rules_of(config: Path | None) -> ComplexityClassifier:
    """The rules as the gateway would build them from `config` (defaults when it has no router.auto)."""
    auto = load_config(config).router.auto if config is not None else None
    if auto is None:
        auto = AutoTiers(routine="-", moderate="-", complex="-")
    return ComplexityClassifier(auto.moderate_at, auto.complex_at, auto.weights)


def describe(decision: TierDecision) -> str:
    """'complex, score 5.0: math, proof'."""
    return f"{decision.tier.value}, score {decision.score:g}: {', '.join(decision.signals) or 'no signal'}"


@auto_app.command("explain")
def explain(
    text: Annotated[str, typer.Argument(help="a user message (as the last turn of a chat request)")],
    config: ConfigOption = None,
) -> None:
    """The tier the rules give one chat message, its score and the signals that fired."""
    typer.echo(describe(rules_of(config).classify({"messages": [{"role": "user", "content": text}]})))


@auto_app.command("check")
def check(
    config: ConfigOption = None,
    examples: Annotated[Path, typer.Option("--examples", help="labelled requests (docs/router-auto.md)")] = SHIPPED,
    misses: Annotated[bool, typer.Option("--misses", help="list every disagreement, with its signals")] = False,
) -> None:
    """Accuracy of the rules on labelled requests: per split, in all, and the confusion matrix."""
    try:
        items = load_labelled(examples)
    except LabelledSetError as err:
        raise ConfigError(str(err)) from None
    rules = rules_of(config)
    splits = Counter(str(item.get("split", "all")) for item in items)
    if len(splits) > 1:
        for split in splits:
            part = evaluate([i for i in items if str(i.get("split", "all")) == split], lambda r: rules.classify(r).tier)
            typer.echo(f"{split:<12} {part.right:>4}/{part.total:<4} {part.accuracy:6.1%}")
    whole = evaluate(items, lambda r: rules.classify(r).tier, explain=lambda r: describe(rules.classify(r)))
    typer.echo(f"{'all':<12} {whole.right:>4}/{whole.total:<4} {whole.accuracy:6.1%}\n")
    typer.echo(format_confusion(whole.matrix))
    if misses and whole.misses:
        typer.echo("\n" + "\n".join(whole.misses))


def register(app: typer.Typer) -> None:
    """Add `gpufleet auto …`."""
    app.add_typer(auto_app, name="auto")
