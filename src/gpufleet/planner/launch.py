"""The launch record: every vLLM setting of one model, and the one renderer that turns it into argv and env.

    >>> lp = plan_launch(plan)                          # doctest: +SKIP
    >>> ["vllm", "serve", *lp.argv]                     # the model, then render_flags(lp)
    >>> ["python", "-m", API, *server_args(replace(lp, host="127.0.0.1", port=8001))]

`LaunchPlan` is the only contract between the planner, the engines (process and container), `gpufleet plan`
(`--json`, `--emit-config`) and the deploy generators: each builds or reads this record, and only
`render_flags`/`launch_env` spell it out for vLLM. Its fields are named like the config's (`models.<name>.*`),
so a config entry maps onto it field by field.

Never emits flags current vLLM removed (vllm-facts.md §2): --swap-space, --rope-scaling, nor VLLM_USE_V1 (only
seed 001's WSL2 offload trick, and only for vLLM < 0.11); --enable-reasoning only for a vLLM known to be < 0.10.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gpufleet.catalog import GIB
from gpufleet.errors import PlanError
from gpufleet.planner.types import Plan
from gpufleet.planner.vllm_versions import has_v0_engine, since, yarn_key, yarn_needs_max_position_override

# vLLM's own telemetry and that of its libraries stay off in every process gpufleet starts or generates.
QUIET_ENV: Mapping[str, str] = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


@dataclass(frozen=True)
class LaunchPlan:
    """One vLLM OpenAI server: the model, its settings as typed fields, extra env and where it runs.

    `None`/`False` means "not passed" (vLLM's default). `host`/`port` are left unset by the planner: the
    supervisor or a generator sets them (`dataclasses.replace`).
    """

    model: str  # HF repo id or local directory (vLLM's --model)
    served_model_name: str
    device: Literal["cuda", "cpu"] = "cuda"
    vllm_version: str | None = None  # the version the flags are spelled for; None: unknown
    image: str | None = None  # a pinned vllm/vllm-openai image when it runs in a container
    quantization: str | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    nodes: int = 1  # hosts the TP x PP GPUs span (seed 004: 2, joined by Ray)
    distributed_executor_backend: str | None = None
    enforce_eager: bool = False
    kv_cache_dtype: str | None = None
    cpu_offload_gb: int | None = None
    hf_overrides: Mapping[str, Any] | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    enable_sleep_mode: bool = False
    cpu_kv_cache_space_gib: int | None = None  # VLLM_CPU_KVCACHE_SPACE (CPU build)
    extra_args: tuple[str, ...] = ()  # more flags, verbatim, after the typed ones
    env: Mapping[str, str] = field(default_factory=dict)  # more environment (VLLM_USE_V1, the config's env)
    host: str | None = None
    port: int | None = None

    @property
    def argv(self) -> list[str]:
        """`vllm serve` arguments: the model (positional), then the flags."""
        return [self.model, *render_flags(self)]

    @property
    def gpu_count(self) -> int:
        """GPUs in total across nodes (0 on the CPU backend)."""
        return 0 if self.device == "cpu" else self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def gpus_per_node(self) -> int:
        """GPUs one node (one container, one pod) needs."""
        return self.gpu_count // max(self.nodes, 1)


def _reasoning_flags(launch: LaunchPlan) -> list[str]:
    assert launch.reasoning_parser is not None
    # Before 0.10 a reasoning parser did nothing without --enable-reasoning; 0.10 removed the flag (seed 000).
    old = launch.vllm_version is not None and not since("enable_reasoning_removed", launch.vllm_version)
    return [*(["--enable-reasoning"] if old else []), "--reasoning-parser", launch.reasoning_parser]


def _value(flag: str) -> Callable[[Any], list[str]]:
    return lambda value: [flag, str(value)]


def _switch(flag: str) -> Callable[[Any], list[str]]:
    return lambda value: [flag]


def _more_than_one(flag: str) -> Callable[[Any], list[str]]:
    return lambda value: [flag, str(value)] if value > 1 else []


# Field -> flags, in the order vLLM's command line is written. A field whose value is None/False/0 is left out.
FLAGS: tuple[tuple[str, Callable[[Any], list[str]]], ...] = (
    ("served_model_name", _value("--served-model-name")),
    ("quantization", _value("--quantization")),
    ("dtype", _value("--dtype")),
    ("max_model_len", _value("--max-model-len")),
    ("gpu_memory_utilization", lambda v: ["--gpu-memory-utilization", f"{v:g}"]),
    ("tensor_parallel_size", _more_than_one("--tensor-parallel-size")),
    ("pipeline_parallel_size", _more_than_one("--pipeline-parallel-size")),
    ("distributed_executor_backend", _value("--distributed-executor-backend")),
    ("enforce_eager", _switch("--enforce-eager")),
    ("kv_cache_dtype", _value("--kv-cache-dtype")),
    ("cpu_offload_gb", _value("--cpu-offload-gb")),
    ("hf_overrides", lambda v: ["--hf-overrides", json.dumps(v, separators=(",", ":"))]),
    ("max_num_seqs", _value("--max-num-seqs")),
    ("max_num_batched_tokens", _value("--max-num-batched-tokens")),
    ("reasoning_parser", lambda v: []),  # rendered by _reasoning_flags (its spelling depends on the version)
    ("tool_call_parser", lambda v: ["--enable-auto-tool-choice", "--tool-call-parser", v]),
    ("enable_sleep_mode", _switch("--enable-sleep-mode")),
)


def render_flags(launch: LaunchPlan, *, only: Collection[str] | None = None) -> list[str]:
    """The vLLM server's flags for `launch` (everything but the model), the one place they are spelled.

    `only` limits the output to those fields (`--emit-config` writes the flags with no config field).
    """
    argv: list[str] = []
    for name, render in FLAGS:
        value = getattr(launch, name)
        if only is not None and name not in only:
            continue
        if name == "reasoning_parser" and value:
            argv += _reasoning_flags(launch)
        elif value:
            argv += render(value)
    if only is None:
        argv += launch.extra_args
        if launch.host is not None:
            argv += ["--host", launch.host]
        if launch.port is not None:
            argv += ["--port", str(launch.port)]
    return argv


def server_args(launch: LaunchPlan) -> list[str]:
    """Arguments of the API server module and of the vllm/vllm-openai image's entrypoint: `--model M ...`."""
    return ["--model", launch.model, *render_flags(launch)]


def launch_env(launch: LaunchPlan) -> dict[str, str]:
    """The environment these settings need (without QUIET_ENV, which every launcher adds)."""
    env: dict[str, str] = {}
    if launch.device == "cpu" and launch.cpu_kv_cache_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(launch.cpu_kv_cache_space_gib)
    env.update(launch.env)
    if launch.enable_sleep_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"  # the /sleep and /wake_up routes exist only in dev mode
    return env


def default_served_name(plan: Plan) -> str:
    """`qwen3-32b` for the default checkpoint, `qwen3-32b-awq` for another."""
    model, quant = plan.model, plan.variant.quantization
    return model.name if quant == model.default_quantization else f"{model.name}-{quant}"


def hf_overrides_for_yarn(plan: Plan) -> dict[str, object]:
    """The --hf-overrides object that turns YaRN on (docs.vllm.ai features/context_extension)."""
    assert plan.yarn_factor is not None and plan.yarn_original_context is not None
    version = plan.request.vllm_version
    scaling: dict[str, object] = {
        "rope_type": "yarn",
        "factor": plan.yarn_factor,
        "original_max_position_embeddings": plan.yarn_original_context,
    }
    theta = int(plan.model.rope_theta) if plan.model.rope_theta.is_integer() else plan.model.rope_theta
    if yarn_key(version) == "rope_parameters":
        overrides: dict[str, object] = {"rope_parameters": {**scaling, "rope_theta": theta}}
    else:
        overrides = {"rope_scaling": scaling, "rope_theta": theta}
    if yarn_needs_max_position_override(version):
        # 0.33 no longer derives original * factor for yarn, so the window must be stated.
        overrides["max_position_embeddings"] = plan.context
    return overrides


def plan_launch(
    plan: Plan,
    *,
    served_model_name: str | None = None,
    model_path: str | None = None,
    enable_tools: bool = True,
    enable_reasoning: bool = True,
) -> LaunchPlan:
    """The launch record of a plan that fits; PlanError (with the plan's reasons) otherwise."""
    if not plan.fits:
        raise PlanError(f"{plan.model.name} does not fit on {plan.device}: " + " ".join(plan.reasons))
    req = plan.request
    cpu = plan.device == "cpu"
    env: dict[str, str] = {}
    kv_space_gib: int | None = None
    if cpu:
        assert req.cpu_kv_space_bytes is not None
        space_gib = req.cpu_kv_space_bytes / GIB
        if not space_gib.is_integer():
            raise PlanError(
                f"VLLM_CPU_KVCACHE_SPACE takes whole GiB; got {space_gib:g} GiB", param="cpu_kv_space_bytes"
            )
        kv_space_gib = int(space_gib)
    if plan.cpu_offload_used and req.host_wsl2 and has_v0_engine(req.vllm_version):
        # Seed 001: WSL2 has no pinned memory; V1 offload asserts, V0 works (slowly).
        env["VLLM_USE_V1"] = "0"
    serving = plan.model.serving
    return LaunchPlan(
        model=model_path or plan.variant.repo,
        served_model_name=served_model_name or default_served_name(plan),
        device="cpu" if cpu else "cuda",
        vllm_version=req.vllm_version,
        quantization=plan.quantization_kernel,
        # vllm-cpu: bf16 weights (float32 where bf16 misbehaves); eager starts in ~52 s, compiling takes
        # ~4 min (reference/vllm-cpu.md).
        dtype=("float32" if req.kv_cache_dtype == "float32" else "bfloat16") if cpu else plan.dtype,
        max_model_len=plan.context,
        gpu_memory_utilization=None if cpu else req.gpu_memory_utilization,
        tensor_parallel_size=plan.tensor_parallel,
        pipeline_parallel_size=plan.pipeline_parallel,
        nodes=plan.nodes,
        distributed_executor_backend="ray" if plan.nodes > 1 else None,
        enforce_eager=plan.enforce_eager,
        kv_cache_dtype=req.kv_cache_dtype if req.kv_cache_dtype != "auto" and not cpu else None,
        cpu_offload_gb=plan.cpu_offload_bytes // GIB if plan.cpu_offload_used else None,
        hf_overrides=hf_overrides_for_yarn(plan) if plan.needs_yarn else None,
        max_num_seqs=req.max_num_seqs,
        max_num_batched_tokens=req.max_num_batched_tokens,
        reasoning_parser=serving.reasoning_parser if enable_reasoning else None,
        tool_call_parser=serving.tool_call_parser if enable_tools else None,
        cpu_kv_cache_space_gib=kv_space_gib,
        env=env,
    )
