"""`gpufleet plan MODEL --gpu NAME`: will it fit, how, and the exact `vllm serve` line.

Exit codes: 0 the plan fits, 1 it does not (the output says why and how to fix it), 2 bad input.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from gpufleet.catalog import (
    GIB,
    GpuSpec,
    ModelRef,
    builtin_gpus,
    custom_gpu,
    get_gpu,
    get_model,
    model_from_hf_dir,
)
from gpufleet.catalog.hf_hub import model_from_hub
from gpufleet.config import VllmModel
from gpufleet.engines.vllm_docker import image_vllm_version
from gpufleet.engines.vllm_resolve import CONFIG_FIELDS
from gpufleet.errors import PlanError
from gpufleet.planner import (
    DEFAULT_UTILIZATION,
    DEFAULT_VLLM_VERSION,
    KvBand,
    Plan,
    PlanRequest,
    context_table,
    plan,
    plan_json,
    plan_launch,
)
from gpufleet.planner.calibration import calibrate
from gpufleet.planner.calibration_file import load_measurements
from gpufleet.planner.launch import FLAGS, LaunchPlan, launch_env, render_flags
from gpufleet.planner.vllm_versions import budgets_cudagraphs


def resolve_model(name: str) -> ModelRef:
    """A catalog name/alias/repo id, or a local Hugging Face directory."""
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelRef(model_from_hf_dir(path), None)
    return get_model(name)


def resolve_gpu(
    gpu: str | None, vram_gb: float | None, bandwidth_gbps: float | None, compute_capability: str | None
) -> GpuSpec:
    """--gpu from the catalog, or a custom card from --vram-gb/--bandwidth-gbps/--compute-capability."""
    if vram_gb is not None or bandwidth_gbps is not None:
        if gpu is not None:
            raise PlanError("give either --gpu or --vram-gb/--bandwidth-gbps, not both")
        if vram_gb is None or bandwidth_gbps is None or vram_gb <= 0 or bandwidth_gbps <= 0:
            raise PlanError(
                "a custom GPU needs positive --vram-gb and --bandwidth-gbps (and --compute-capability, default 8.6)"
            )
        return custom_gpu(vram_gb, bandwidth_gbps, compute_capability or "8.6")
    if gpu is None:
        raise PlanError(
            "say which GPU: --gpu NAME (see 'gpufleet catalog gpus'), --vram-gb/--bandwidth-gbps "
            "for another card, or --cpu for vLLM's CPU backend"
        )
    found = get_gpu(gpu)
    return found


def _split_quantization(ref: ModelRef, quantization: str | None) -> tuple[str | None, str | None]:
    """('awq', 'awq_marlin') from --quantization awq_marlin; checkpoint names pass through."""
    if quantization and quantization.endswith("_marlin"):
        return quantization.removesuffix("_marlin"), quantization
    return quantization or ref.quantization, None


def _gib(n: int | float) -> str:
    return f"{n / GIB:,.2f} GiB"


def _print_human(p: Plan, launch: LaunchPlan | None, console: Console) -> None:
    req = p.request
    where = "vLLM CPU backend" if p.device == "cpu" else f"{p.tensor_parallel * p.pipeline_parallel}x {p.device}"
    verdict = "[green]FITS[/green]" if p.fits else "[red]DOES NOT FIT[/red]"
    console.print(f"[bold]{p.model.name}[/bold] ({p.variant.quantization}: {p.variant.repo}) on {where}: {verdict}")
    table = Table("per GPU" if p.device != "cpu" else "CPU", "value", "how")
    if p.device == "cpu":
        table.add_row("KV cache space", _gib(p.kv_cache_bytes_per_gpu), "VLLM_CPU_KVCACHE_SPACE")
    else:
        table.add_row("CUDA total", _gib(p.total_bytes_per_gpu), "what cudaMemGetInfo reports")
        table.add_row("vLLM budget", _gib(p.requested_bytes_per_gpu), f"x {req.gpu_memory_utilization:g} utilization")
        table.add_row("weights", _gib(p.weights_bytes_per_gpu), p.variant.weight_bytes_source)
        table.add_row("non-torch", _gib(p.non_torch_bytes), "workspaces (+ NCCL with TP/PP)")
        table.add_row("profile batch", f"{p.profile_tokens:,} tokens, {p.profile_seqs:,} seqs", p.profile_why)
        table.add_row("activation peak", _gib(p.activation_peak_bytes), "forward pass of the profile batch")
        table.add_row("sampler", _gib(p.sampler_bytes), "fp32 logits of the profile seqs (V1)")
        table.add_row("CUDA graphs", _gib(p.cudagraph_bytes), _graphs_how(p))
        table.add_row("KV cache", _gib(max(p.kv_cache_bytes_per_gpu, 0)), "budget minus all of the above")
    table.add_row("KV bytes/token", f"{p.kv_bytes_per_token:,}", f"block {p.block_size}")
    table.add_row("KV cache tokens", f"{p.kv_cache_tokens:,}", f"{p.num_blocks:,} blocks")
    table.add_row("max context", f"{p.max_context:,}", f"max_position_embeddings {p.model.max_position_embeddings:,}")
    table.add_row(f"requests at {p.context:,}", f"{p.max_concurrency:.2f}", f"target {req.concurrency}")
    if p.calibration is not None:
        c = p.calibration
        table.add_row(c.kind, f"{p.kv_cache_tokens:,} (plan {c.planned_tokens:,})", c.note)
    if p.band is not None:
        _add_band_rows(table, p.band)
    if p.needs_yarn:
        table.add_row("YaRN", f"factor {p.yarn_factor}", f"from {p.yarn_original_context:,}")
    table.add_row("quantization kernel", p.quantization_kernel or "-", "")
    if p.cpu_offload_bytes:
        table.add_row("CPU offload", _gib(p.cpu_offload_bytes), "used" if p.cpu_offload_used else "would be needed")
    if p.decode_tok_s_estimate is not None:
        table.add_row(
            "decode (1 stream)", f"~{p.decode_tok_s_estimate:.1f} tok/s", f"roofline x {req.efficiency:g} efficiency"
        )
    console.print(table)
    for reason in p.reasons:
        console.print(f"[red]why:[/red] {reason}", highlight=False)
    for warning in p.warnings:
        console.print(f"[yellow]note:[/yellow] {warning}", highlight=False)
    rows = context_table(p)
    if rows and p.num_blocks:
        ctx = Table("context", "KV per request", "requests that fit", "YaRN", title="context vs memory")
        for row in rows:
            fits = f"{row.max_concurrency:.2f}" if row.fits else f"[red]{row.max_concurrency:.2f}[/red]"
            ctx.add_row(f"{row.context:,}", _gib(row.kv_bytes_per_request), fits, "yes" if row.needs_yarn else "")
        console.print(ctx)
    if launch:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch_env(launch).items())
        console.print("[bold]launch:[/bold]", highlight=False)
        console.print(
            f"{env + ' ' if env else ''}vllm serve {shlex.join(launch.argv)} --port PORT",
            highlight=False,
            soft_wrap=True,
        )


def _add_band_rows(table: Table, band: KvBand) -> None:
    """The band vLLM's real figure is expected in (planner/band.py): tokens, context, concurrency."""

    def span(low: float | None, high: float, fmt: str) -> str:
        return f"{'?' if low is None else format(low, fmt)} - {format(high, fmt)}"

    how = f"-{band.below:.1%} / +{band.above:.1%} (the start-up log corpus, docs/planner.md)"
    if band.kv_cache_tokens_low is None:
        how += "; no low end: the figure is an upper bound"
    table.add_row("KV tokens band", span(band.kv_cache_tokens_low, band.kv_cache_tokens_high, ","), how)
    table.add_row("max context band", span(band.max_context_low, band.max_context_high, ","), "")
    table.add_row("requests band", span(band.max_concurrency_low, band.max_concurrency_high, ".2f"), "")


def _graphs_how(p: Plan) -> str:
    if p.enforce_eager:
        return "0 with --enforce-eager"
    if not budgets_cudagraphs(p.request.vllm_version):
        return f"vLLM {p.request.vllm_version} does not budget them (0.21+ does)"
    return "estimated before the KV cache is sized (0.21+)"


# Launch-record flags with no config field of their own go to extra_args, rendered by the one renderer.
_FLAGS_WITHOUT_CONFIG_FIELD = tuple(
    name for name, _ in FLAGS if name not in VllmModel.model_fields and name != "served_model_name"
)


def config_entry(launch: LaunchPlan, *, image: str | None = None) -> dict[str, object]:
    """The `models:` entry of gpufleet.yaml that launches this plan (explicit values, no `plan: true`).

    Read field by field from the launch record, never from its argv.
    """
    entry: dict[str, object] = {"engine": "vllm", "model": launch.model}
    if image:
        entry["launch"] = "docker"
        # Across nodes vLLM's Ray workers talk over the host network (seed 004's two Sparks).
        entry["docker"] = {"image": image, "network_host": True} if launch.nodes > 1 else {"image": image}
    defaults = LaunchPlan(model="", served_model_name="")
    for key in CONFIG_FIELDS:
        if key == "model":
            continue
        value = getattr(launch, key)
        if value is not None and value != getattr(defaults, key):
            entry[key] = dict(value) if key == "hf_overrides" else value
    extra = render_flags(launch, only=_FLAGS_WITHOUT_CONFIG_FIELD)
    if extra:
        entry["extra_args"] = extra
    if launch.env:
        entry["env"] = dict(launch.env)
    return {"models": {launch.served_model_name: entry}}


def emit_config(p: Plan, launch: LaunchPlan, *, image: str | None = None) -> str:
    """config_entry as YAML, with a comment saying where vLLM comes from."""
    where = (
        f"docker image {image}"
        if image
        else "the `vllm` on PATH (set python: /path/to/venv/bin/python, or launch: docker with a pinned image)"
    )
    header = (
        f"# planned by gpufleet for {p.device} and vLLM {p.request.vllm_version}; vLLM comes from {where}.\n"
        "# Paste under models: in gpufleet.yaml; `plan: true` + `gpu:` instead re-plans at every launch.\n"
    )
    return header + yaml.safe_dump(config_entry(launch, image=image), sort_keys=False)


def register(app: typer.Typer) -> None:
    """Add `gpufleet plan`."""

    @app.command("plan")
    def plan_cmd(
        model: Annotated[str, typer.Argument(help="catalog name, alias, HF repo id, or a local HF directory")],
        gpu: Annotated[str | None, typer.Option("--gpu", help="GPU from 'gpufleet catalog gpus'")] = None,
        gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs in total (default: TP x PP)")] = None,
        nodes: Annotated[int | None, typer.Option("--nodes", help="hosts (default: from GPUs per node)")] = None,
        context: Annotated[
            int | None, typer.Option("--context", help="max_model_len (default: longest that fits)")
        ] = None,
        tp: Annotated[int | None, typer.Option("--tp", help="tensor-parallel size")] = None,
        pp: Annotated[int, typer.Option("--pp", help="pipeline-parallel size")] = 1,
        util: Annotated[float, typer.Option("--util", help="--gpu-memory-utilization")] = DEFAULT_UTILIZATION,
        quantization: Annotated[
            str | None, typer.Option("--quantization", "-q", help="checkpoint: bf16, awq, fp8")
        ] = None,
        concurrency: Annotated[int, typer.Option("--concurrency", help="requests at full context")] = 1,
        enforce_eager: Annotated[bool, typer.Option("--enforce-eager")] = False,
        kv_cache_dtype: Annotated[str, typer.Option("--kv-cache-dtype")] = "auto",
        allow_cpu_offload: Annotated[bool, typer.Option("--allow-cpu-offload")] = False,
        no_yarn: Annotated[bool, typer.Option("--no-yarn", help="refuse contexts that need YaRN")] = False,
        wsl2: Annotated[bool, typer.Option("--wsl2", help="host is WSL2 (no pinned memory)")] = False,
        vllm_version: Annotated[
            str, typer.Option("--vllm-version", help="the vLLM whose memory accounting to follow")
        ] = DEFAULT_VLLM_VERSION,
        max_num_batched_tokens: Annotated[
            int | None, typer.Option("--max-num-batched-tokens", help="vLLM's profile batch (default: vLLM's)")
        ] = None,
        max_num_seqs: Annotated[
            int | None, typer.Option("--max-num-seqs", help="sequences per step; sizes the sampler profile")
        ] = None,
        from_hub: Annotated[
            bool,
            typer.Option("--from-hub", help="MODEL is a Hub repo id: read config.json + safetensors headers"),
        ] = False,
        what_if: Annotated[
            bool, typer.Option("--what-if", help="plan --quantization even without such a checkpoint (hypothetical)")
        ] = False,
        kv_connector: Annotated[
            str | None, typer.Option("--kv-connector", help="e.g. LMCacheConnectorV1: warn, its buffers are unmodelled")
        ] = None,
        vram_gb: Annotated[float | None, typer.Option("--vram-gb", help="custom GPU: VRAM in GiB")] = None,
        bandwidth_gbps: Annotated[float | None, typer.Option("--bandwidth-gbps", help="custom GPU: GB/s")] = None,
        compute_capability: Annotated[str | None, typer.Option("--compute-capability", help="e.g. 8.6")] = None,
        cpu: Annotated[bool, typer.Option("--cpu", help="plan vLLM's CPU backend instead of a GPU")] = False,
        kv_space_gib: Annotated[int, typer.Option("--kv-space-gib", help="CPU: VLLM_CPU_KVCACHE_SPACE")] = 4,
        served_name: Annotated[str | None, typer.Option("--served-name")] = None,
        ignore_measured: Annotated[
            bool,
            typer.Option("--ignore-measured", help="the planner's own figure, not this host's launches"),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="machine-readable output (stable keys)")] = False,
        emit: Annotated[
            bool, typer.Option("--emit-config", help="print a gpufleet.yaml models: entry that launches this plan")
        ] = False,
        image: Annotated[
            str | None,
            typer.Option("--image", help="with --emit-config: run in this pinned image (sets the vLLM version)"),
        ] = None,
    ) -> None:
        """Will MODEL fit on GPU? Memory budget, max context, concurrency, speed and the vllm serve line."""
        if image is not None:
            image_version = image_vllm_version(image)
            if image_version and vllm_version == DEFAULT_VLLM_VERSION:
                vllm_version = image_version
        ref = ModelRef(model_from_hub(model), None) if from_hub else resolve_model(model)
        checkpoint, kernel = _split_quantization(ref, quantization)
        device = None if cpu else resolve_gpu(gpu, vram_gb, bandwidth_gbps, compute_capability)
        if cpu and kv_space_gib < 1:
            raise PlanError(f"--kv-space-gib must be >= 1, got {kv_space_gib}", param="kv_space_gib")
        if tp is None:
            if gpus is not None and (gpus < 1 or gpus % pp):
                raise PlanError(f"--gpus {gpus} is not a positive multiple of --pp {pp}", param="gpus")
            tp = (gpus // pp) if gpus else 1
        elif gpus is not None and gpus != tp * pp:
            raise PlanError(f"--gpus {gpus} does not match --tp {tp} x --pp {pp}", param="gpus")
        request = PlanRequest(
            model=ref.spec,
            gpu=device,
            quantization=checkpoint,
            quantization_kernel=kernel,
            tensor_parallel=tp,
            pipeline_parallel=pp,
            nodes=nodes,
            gpu_memory_utilization=util,
            context=context,
            concurrency=concurrency,
            enforce_eager=enforce_eager,
            kv_cache_dtype=kv_cache_dtype,
            allow_yarn=not no_yarn,
            allow_cpu_offload=allow_cpu_offload,
            host_wsl2=wsl2,
            vllm_version=vllm_version,
            cpu_kv_space_bytes=kv_space_gib * GIB if cpu else None,
            max_num_batched_tokens=max_num_batched_tokens,
            max_num_seqs=max_num_seqs,
            kv_connector=kv_connector,
            what_if=what_if,
        )
        result = plan(request, alternative_gpus=tuple(builtin_gpus().values()) if device else ())
        if not ignore_measured:
            result = calibrate(result, load_measurements())  # launches on this host (planner/calibration.py)
        # A catalog name the user typed ("qwen3-235b-awq") is the natural served name; repo ids and
        # paths fall back to the canonical catalog name.
        typed = model if "/" not in model and not Path(model).expanduser().exists() else None
        # A hypothetical checkpoint has nothing to launch: the plan is a what-if.
        launchable = result.fits and not result.hypothetical
        launch = plan_launch(result, served_model_name=served_name or typed) if launchable else None
        if emit and launch is not None:
            typer.echo(emit_config(result, launch, image=image), nl=False)
        elif as_json:
            typer.echo(json.dumps(plan_json(result, launch), indent=2))
        else:
            _print_human(result, launch, Console(width=max(Console().width, 120)))
        if not result.fits:
            raise typer.Exit(1)
