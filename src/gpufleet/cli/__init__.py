"""The `gpufleet` command line: a thin layer over the library, one module per subcommand.

Each module in `_COMMAND_MODULES` exposes `register(app)`. Every GpufleetError becomes a one-line
message on stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from gpufleet.errors import GpufleetError


class _GpufleetGroup(TyperGroup):
    """Root command group: a GpufleetError anywhere below becomes 'error: ...' on stderr and exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except GpufleetError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="gpufleet",
    cls=_GpufleetGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Run open-weight LLMs on your own GPUs as one OpenAI-compatible service.",
    pretty_exceptions_enable=False,
)

# One module per subcommand; add a name here when adding a subcommand module.
_COMMAND_MODULES = [
    "serve_cmd",
    "models_cmd",
    "engines_cmd",
    "plan_cmd",
    "catalog_cmd",
    "doctor_cmd",
    "swap_cmd",
    "status_cmd",
    "node_cmd",
    "deploy_cmd",
    "bench_cmd",
    "auto_cmd",
    "launch_cmd",
    "keys_cmd",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(f"gpufleet.cli.{_name}").register(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except GpufleetError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
