"""`gpufleet bench`: load gateway models or engine URLs side by side; table, JSON and PNG plots.

gpufleet bench qwen2.5-coder smollm2 --concurrency 1,4,16 --max-tokens 64 --plot bench.png
gpufleet bench smollm2 --compare-direct            # the same model through the gateway and straight
gpufleet bench smollm2 --rate 1,2,4                # open loop: Poisson arrivals at 1, 2, 4 requests/s
gpufleet bench llama=http://127.0.0.1:9001/v1#smollm2 vllm=http://127.0.0.1:9002/v1#smollm2 --json out.json
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from gpufleet.bench.engine_info import engine_info
from gpufleet.bench.estimate import decode_estimate
from gpufleet.bench.host import gpufleet_build, host_info
from gpufleet.bench.latest import write_latest
from gpufleet.bench.load import load_prompts
from gpufleet.bench.outputs import check_output
from gpufleet.bench.plot import plot_report
from gpufleet.bench.report import TABLE_COLUMNS, BenchReport, BenchSettings, TargetInfo, level_text, table_rows
from gpufleet.bench.runner import engine_behind, run_bench, total_requests
from gpufleet.bench.stats import RequestSample
from gpufleet.bench.targets import BenchTarget, parse_concurrency, parse_rates, parse_targets
from gpufleet.config import Config, load_config
from gpufleet.errors import ConfigError
from gpufleet.paths import bench_latest_dir


def _config(option: Path | None) -> Config | None:
    path = option or (Path(os.environ["GPUFLEET_CONFIG"]) if os.environ.get("GPUFLEET_CONFIG") else None)
    return load_config(path) if path is not None else None


def _infos(targets: list[BenchTarget], direct: dict[str, BenchTarget], config: Config | None) -> list[TargetInfo]:
    infos: list[TargetInfo] = []
    for target in targets:
        estimate, note = decode_estimate(config, target.model) if config is not None else (None, None)
        infos.append(TargetInfo(target, planner_decode_tok_s=estimate, planner_note=note))
        if target.label in direct:
            infos.append(
                TargetInfo(
                    direct[target.label], direct_of=target.label, planner_decode_tok_s=estimate, planner_note=note
                )
            )
    return infos


async def _engines(infos: list[TargetInfo], api_key: str | None) -> list[TargetInfo]:
    """Each target with its engine's name and version; a gateway target takes the version its direct twin
    reported (the gateway's /status names the engine, not its version)."""
    found = await asyncio.gather(*(engine_info(info.target, api_key=api_key) for info in infos))
    with_engine = [dataclasses.replace(info, engine=engine) for info, engine in zip(infos, found, strict=True)]
    by_label = {info.target.label: info for info in with_engine}
    for info in with_engine:
        if info.direct_of and info.engine and (twin := by_label.get(info.direct_of)) and twin.engine:
            if not twin.engine["version"] and info.engine["version"]:
                twin.engine["version"] = info.engine["version"]
                twin.engine["source"] += f"; version from {info.target.label}"
            twin.engine["name"] = twin.engine["name"] or info.engine["name"]
    return with_engine


def _print_report(console: Console, report: dict[str, Any]) -> None:
    table = Table(*TABLE_COLUMNS, title="gpufleet bench")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    open_runs = [run for run in report["runs"] if run["mode"] == "open"]
    if open_runs:
        delivery = Table(
            "target",
            "offered req/s",
            "sent req/s",
            "completed req/s",
            "max in flight",
            title="open loop (Poisson arrivals): how the load was delivered",
        )
        for run in open_runs:
            delivery.add_row(
                run["target"],
                f"{run['rate']:g}",
                f"{run['sent_per_s']:.2f}",
                f"{run['req_per_s']:.2f}",
                str(run["max_in_flight"]),
            )
        console.print(delivery)
    if report["gateway_overhead"]:
        cost = Table(
            "through gateway",
            "direct",
            "load",
            "TTFT p50 added ms",
            "latency p50 added ms",
            "tok/s ratio",
            title="the gateway's cost under load",
        )
        for row in report["gateway_overhead"]:
            cost.add_row(
                row["target"],
                row["direct"],
                level_text(row),
                str(row["ttft_p50_added_ms"]),
                str(row["latency_p50_added_ms"]),
                str(row["tok_per_s_ratio"]),
            )
        console.print(cost)
    for target in report["targets"]:
        if target["output_length"]["note"]:
            console.print(f"output length for {target['label']}: {target['output_length']['note']}")
    for target in report["targets"]:
        if target["planner_note"] and not target["direct_of"]:
            console.print(f"planner estimate for {target['label']}: {target['planner_note']}")
    for run in report["runs"]:
        for message, count in run["errors"].items():
            console.print(f"[red]{run['target']} at {level_text(run)}: {count} x {message}[/red]")


def bench(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="gateway model/route names, URL#model (an engine's own /v1 URL) or LABEL=URL#model", show_default=False
        ),
    ],
    base_url: Annotated[
        str, typer.Option("--base-url", envvar="GPUFLEET_URL", help="the gateway that bare model names go to")
    ] = "http://127.0.0.1:8000/v1",
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="GPUFLEET_API_KEY", help="Bearer key of the gateway")
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(
            help="closed loop: requests in flight, comma-separated levels (default 1,4 unless --rate is given)",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate",
            help="open loop: requests per second, comma-separated levels (Poisson arrivals, seeded)",
            show_default=False,
        ),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            "--requests", min=1, help="requests per target and level (default 4 x concurrency; rate x 10, at least 4)"
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="output tokens per request")] = 64,
    fixed_output: Annotated[
        bool,
        typer.Option(
            "--fixed-output/--natural-output",
            help="ask for exactly --max-tokens tokens (ignore_eos, min_tokens) where the engine takes them",
        ),
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="request seeds and the open-loop arrival schedule")] = 0,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help='one prompt per line, or JSONL with a "prompt" field')
    ] = None,
    compare_direct: Annotated[
        bool, typer.Option("--compare-direct", help="also load the engine behind each gateway model directly")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report as JSON here")] = None,
    plot_out: Annotated[Path | None, typer.Option("--plot", help="write the plots (PNG) here")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="let --plot/--json overwrite a file gpufleet bench did not write")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="gpufleet.yaml, for the planner's decode estimate (default: $GPUFLEET_CONFIG)"
        ),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest/--no-latest", help=f"keep this report as the latest one in {bench_latest_dir()}")
    ] = True,
    timeout_s: Annotated[float, typer.Option("--timeout", min=1, help="seconds per request")] = 600,
) -> None:
    """Benchmark targets side by side: TTFT, inter-token latency, tok/s, req/s, errors (p50/p95/p99)."""
    parsed = parse_targets(targets, gateway=base_url)
    # Before the run: a refused output path must not cost a benchmark first.
    if plot_out is not None:
        check_output(plot_out, "--plot", kind="png", force=force)
    if json_out is not None:
        check_output(json_out, "--json", kind="json", force=force)
    rates = parse_rates(rate) if rate is not None else []
    levels = parse_concurrency(concurrency) if concurrency is not None else ([] if rates else [1, 4])
    prompt_list = load_prompts(prompts)
    cfg = _config(config)
    if compare_direct and not any(t.via_gateway for t in parsed):
        raise ConfigError("--compare-direct needs a gateway target (a model name, sent to --base-url)")
    direct: dict[str, BenchTarget] = {}
    if compare_direct:
        for target in parsed:
            if target.via_gateway:
                direct[target.label] = asyncio.run(engine_behind(target, api_key=api_key, timeout_s=timeout_s))
    infos = asyncio.run(_engines(_infos(parsed, direct, cfg), api_key))
    settings = BenchSettings(
        tuple(levels), requests, max_tokens, len(prompt_list), rates=tuple(rates), fixed_output=fixed_output, seed=seed
    )
    host, build = host_info(), gpufleet_build()
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("errors: {task.fields[errors]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("starting", total=total_requests(settings, len(infos)), errors=0)
        failed = 0

        def on_sample(sample: RequestSample) -> None:
            nonlocal failed
            failed += 0 if sample.ok else 1
            bar.update(task, advance=1, errors=failed)

        result: BenchReport = asyncio.run(
            run_bench(
                infos,
                prompt_list,
                settings,
                api_key=api_key,
                timeout_s=timeout_s,
                on_sample=on_sample,
                on_stage=lambda stage: bar.update(task, description=stage),
            )
        )
    report = dataclasses.replace(result, host=host, gpufleet=build).as_dict()
    _print_report(Console(), report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1), encoding="utf-8")
        typer.echo(f"report: {json_out}", err=True)
    if plot_out is not None:
        typer.echo(f"plot: {plot_report(report, plot_out)}", err=True)
    if latest:
        typer.echo(f"latest report and plot: {write_latest(report)}", err=True)


def register(app: typer.Typer) -> None:
    """Add `gpufleet bench` to the root app."""
    app.command("bench")(bench)
