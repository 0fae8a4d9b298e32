"""`gpufleet catalog [models|gpus] [--json]`: what the planner knows, and where the numbers came from."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpufleet.catalog import GB, GIB, GpuSpec, ModelSpec, builtin_gpus, builtin_models
from gpufleet.planner.memory import kv_bytes_per_token

_WHAT = ("all", "models", "gpus")


def model_row(spec: ModelSpec) -> dict[str, object]:
    """One model as JSON: architecture numbers, checkpoints, serving facts, source."""
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "architecture": spec.architecture,
        "layers": spec.layers,
        "hidden_size": spec.hidden_size,
        "attention_heads": spec.attention_heads,
        "kv_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "intermediate_size": spec.intermediate_size,
        "experts": spec.experts,
        "experts_per_token": spec.experts_per_token,
        "moe_intermediate_size": spec.moe_intermediate_size,
        "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "yarn_original_context": spec.yarn_original_context,
        "rope_theta": spec.rope_theta,
        "params_total": spec.params_total,
        "params_active": spec.params_active,
        "kv_bytes_per_token_bf16": kv_bytes_per_token(spec),
        "checkpoints": {
            q: {
                "repo": v.repo,
                "format": v.format,
                "weight_bytes": v.weight_bytes,
                "size_source": v.weight_bytes_source,
            }
            for q, v in spec.variants.items()
        },
        "reasoning_parser": spec.serving.reasoning_parser,
        "tool_call_parser": spec.serving.tool_call_parser,
        "thinking": spec.serving.thinking,
        "source": spec.source,
    }


def gpu_row(gpu: GpuSpec) -> dict[str, object]:
    """One GPU as JSON."""
    return {
        "name": gpu.name,
        "display_name": gpu.display_name,
        "aliases": list(gpu.aliases),
        "vram_bytes": gpu.vram_bytes,
        "usable_bytes": gpu.usable_bytes,
        "bandwidth_gbps": gpu.bandwidth_gbps,
        "compute_capability": gpu.compute_capability,
        "pcie_gen": gpu.pcie_gen,
        "marlin": gpu.supports_marlin,
        "fp8": gpu.supports_fp8,
        "needs_eager": gpu.needs_eager,
        "unified_memory": gpu.unified_memory,
        "source": gpu.source,
    }


def _models_table() -> Table:
    table = Table(
        "model", "params", "layers", "kv heads x dim", "KV/token", "max ctx", "checkpoints", "parsers", title="models"
    )
    table.columns[0].no_wrap = True
    for spec in builtin_models().values():
        params = f"{spec.params_total / 1e9:.1f}B" + (
            f" ({spec.params_active / 1e9:.1f}B active)" if spec.is_moe else ""
        )
        ckpts = ", ".join(f"{q} {v.weight_bytes / GB:.1f} GB" for q, v in spec.variants.items())
        parsers = " / ".join(p for p in (spec.serving.reasoning_parser, spec.serving.tool_call_parser) if p) or "-"
        table.add_row(
            spec.name,
            params,
            str(spec.layers),
            f"{spec.kv_heads} x {spec.head_dim}",
            f"{kv_bytes_per_token(spec) // 1024} KiB",
            f"{spec.max_position_embeddings:,}",
            ckpts,
            parsers,
        )
    return table


def _gpus_table() -> Table:
    table = Table("gpu", "name", "VRAM", "CUDA total", "GB/s", "sm", "PCIe", "notes", title="GPUs")
    for gpu in builtin_gpus().values():
        notes = ", ".join(
            n
            for n, on in (
                ("marlin", gpu.supports_marlin),
                ("fp8", gpu.supports_fp8),
                ("eager", gpu.needs_eager),
                ("unified", gpu.unified_memory),
            )
            if on
        )
        table.add_row(
            gpu.name,
            gpu.display_name,
            f"{gpu.vram_bytes / GIB:.1f} GiB",
            f"{gpu.usable_bytes / GIB:.2f} GiB",
            f"{gpu.bandwidth_gbps:g}",
            gpu.compute_capability,
            str(gpu.pcie_gen or "-"),
            notes,
        )
    return table


def register(app: typer.Typer) -> None:
    """Add `gpufleet catalog`."""

    @app.command("catalog")
    def catalog(
        what: Annotated[str, typer.Argument(help="models, gpus or all")] = "all",
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """List the models and GPUs the planner knows (numbers from config.json files and datasheets)."""
        if what not in _WHAT:
            raise typer.BadParameter(f"expected one of {', '.join(_WHAT)}, got {what!r}", param_hint="WHAT")
        if as_json:
            out: dict[str, object] = {}
            if what in ("all", "models"):
                out["models"] = [model_row(m) for m in builtin_models().values()]
            if what in ("all", "gpus"):
                out["gpus"] = [gpu_row(g) for g in builtin_gpus().values()]
            typer.echo(json.dumps(out, indent=2))
            return
        console = Console(width=max(Console().width, 140))
        if what in ("all", "models"):
            console.print(_models_table())
        if what in ("all", "gpus"):
            console.print(_gpus_table())
