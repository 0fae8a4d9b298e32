"""`gpufleet doctor`: check this host (optionally against a model's plan); every finding names its fix.

Exit codes: 0 nothing blocks, 1 at least one error finding (e.g. no GPU), 2 bad input.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from gpufleet.catalog import gpu_for_smi_name
from gpufleet.cli.plan_cmd import resolve_gpu, resolve_model
from gpufleet.config import Config, VllmModel, load_config
from gpufleet.doctor import DoctorReport, Finding, check_host, is_wsl, probe_host
from gpufleet.doctor.cluster_checks import check_cluster
from gpufleet.doctor.cluster_probe import probe_cluster
from gpufleet.doctor.facts import HostFacts
from gpufleet.planner import DEFAULT_UTILIZATION, DEFAULT_VLLM_VERSION, Plan, PlanRequest, plan

_STYLE = {"ok": "green", "warn": "yellow", "error": "red"}


def plan_for_host(
    facts: HostFacts,
    model: str,
    gpu: str | None,
    context: int | None,
    tp: int,
    util: float,
    quantization: str | None,
    vllm_version: str,
) -> tuple[Plan | None, Finding | None]:
    """Plan MODEL for this host: --gpu, else the first detected GPU the catalog knows."""
    ref = resolve_model(model)
    if gpu is not None:
        device = resolve_gpu(gpu, None, None, None)
    else:
        detected = next((g for g in (gpu_for_smi_name(i.name) for i in facts.gpus) if g), None)
        if detected is None:
            seen = ", ".join(i.name for i in facts.gpus) or "no GPU"
            return None, Finding(
                "plan",
                "warn",
                f"cannot plan {ref.spec.name}: {seen} detected, none in the catalog",
                "pass --gpu NAME to check against a catalog GPU",
            )
        device = detected
    request = PlanRequest(
        ref.spec,
        device,
        quantization=quantization or ref.quantization,
        tensor_parallel=tp,
        gpu_memory_utilization=util,
        context=context,
        host_wsl2=is_wsl(facts.proc_version),
        vllm_version=vllm_version,
    )
    result = plan(request)
    verdict = f"{ref.spec.name} on {tp}x {device.name}: max context {result.max_context:,}"
    finding = (
        Finding("plan", "ok", f"{verdict}, fits")
        if result.fits
        else Finding(
            "plan",
            "error",
            f"{verdict}, does not fit: {result.reasons[0]}",
            f"gpufleet plan {model} --gpu {device.name} shows the ranked fixes",
        )
    )
    return result, finding


def multi_node_findings(config: Config) -> list[Finding]:
    """Cross-node findings of every model with `nodes:` (doctor/cluster_checks.py)."""
    return [
        finding
        for name, model in config.models.items()
        if isinstance(model, VllmModel) and model.nodes
        for finding in check_cluster(probe_cluster(name, model))
    ]


def register(app: typer.Typer) -> None:
    """Add `gpufleet doctor`."""

    @app.command("doctor")
    def doctor(
        model: Annotated[str | None, typer.Option("--model", help="check the host against this model's plan")] = None,
        gpu: Annotated[str | None, typer.Option("--gpu", help="catalog GPU for the plan (default: detected)")] = None,
        context: Annotated[int | None, typer.Option("--context")] = None,
        tp: Annotated[int, typer.Option("--tp")] = 1,
        util: Annotated[float, typer.Option("--util")] = DEFAULT_UTILIZATION,
        quantization: Annotated[str | None, typer.Option("--quantization", "-q")] = None,
        port: Annotated[int | None, typer.Option("--port", help="check that this port is free")] = None,
        engine_cuda: Annotated[
            str | None, typer.Option("--engine-cuda", help="CUDA of the engine build, e.g. 12.9")
        ] = None,
        vllm_version: Annotated[str, typer.Option("--vllm-version")] = DEFAULT_VLLM_VERSION,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="also check the cross-node facts of its multi-node models (nodes:)"),
        ] = None,
    ) -> None:
        """Check GPUs, free VRAM, driver vs engine CUDA, WSL2, /dev/shm, the port and installed engines."""
        facts = probe_host(port=port)
        the_plan, plan_finding = (None, None)
        if model is not None:
            the_plan, plan_finding = plan_for_host(facts, model, gpu, context, tp, util, quantization, vllm_version)
        findings = check_host(
            facts,
            the_plan,
            engine_cuda=engine_cuda,
            engine_version=None if facts.engine_versions.get("vllm") else vllm_version,
        )
        findings += multi_node_findings(load_config(config)) if config is not None else []
        report = DoctorReport(facts, tuple([*findings, *([plan_finding] if plan_finding else [])]))
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "exit_code": report.exit_code,
                        "findings": [f.as_dict() for f in report.findings],
                        "facts": dataclasses.asdict(facts),
                    },
                    indent=2,
                )
            )
        else:
            table = Table("", "check", "seen", "fix")
            for f in report.findings:
                table.add_row(f"[{_STYLE[f.level]}]{f.level}[/]", f.check, f.seen, f.fix or "")
            Console(width=max(Console().width, 140)).print(table)
        raise typer.Exit(report.exit_code)
