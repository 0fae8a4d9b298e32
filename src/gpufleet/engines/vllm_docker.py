"""vLLM in a container: the `docker run` command line around the `vllm serve` flags (`launch: docker`).

    argv = docker_run_argv("qwen3-32b-awq", docker, container_launch(launch, docker, 41234), port=41234)
    # ['docker', 'run', '--rm', '--init', '--name', 'gpufleet-qwen3-32b-awq-41234', '--gpus', 'all', ...,
    #  'vllm/vllm-openai:v0.10.2', '--model', 'Qwen/Qwen3-32B-AWQ', ...]

The vllm/vllm-openai image's entrypoint is the OpenAI API server, so the arguments after the image are the
server's flags with the model as `--model` (docs.vllm.ai "Deploying with Docker"), rendered from the launch
record by planner/launch.py's server_args like every other vLLM command line. Pure: builds argv only,
so it is tested on machines without Docker; `require_docker` is the one check of the host.

Stopping: the supervisor SIGTERMs the `docker run` process group; `docker run` (attached, no tty) proxies the
signal to the container, where `--init` (tini) passes it to vLLM. A SIGKILLed client would leave the container
running, so the launch spec also carries `docker rm -f NAME` as its stop command (engine_supervisor/process.py).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from gpufleet.config import VllmDocker
from gpufleet.errors import EngineError
from gpufleet.planner.launch import QUIET_ENV, LaunchPlan, launch_env, server_args

CONTAINER_PORT = 8000
CONTAINER_HF_CACHE = "/root/.cache/huggingface"

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_VERSION_TAG = re.compile(r"^v?(\d+\.\d+(?:\.\d+)?)")


def container_name(model_name: str, port: int) -> str:
    """`gpufleet-<model>-<port>`, with characters Docker refuses in names replaced by '-'."""
    return f"gpufleet-{_NAME_UNSAFE.sub('-', model_name).strip('-.')}-{port}"


def image_vllm_version(image: str) -> str | None:
    """The vLLM version an image tag names ('vllm/vllm-openai:v0.8.5.post1' → '0.8.5'); None for a digest
    or a tag that is not a version."""
    if "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    match = _VERSION_TAG.match(last.rsplit(":", 1)[1])
    return match.group(1) if match else None


def gpus_value(gpus: str | Sequence[int]) -> str:
    """Docker's --gpus value: 'all', or '"device=0,1"' (the quotes are part of the value: Docker reads it as
    CSV, and an unquoted comma would split the device list)."""
    if isinstance(gpus, str):
        return gpus
    return '"device=' + ",".join(str(i) for i in gpus) + '"'


def local_model_dir(model: str) -> Path | None:
    """The host directory of a model given as a path, or None for a hub repo id."""
    if not model.startswith(("/", "~", ".")):
        return None
    return Path(model).expanduser().resolve()


def container_launch(launch: LaunchPlan, docker: VllmDocker, port: int) -> LaunchPlan:
    """`launch` listening where the container's vLLM must: 0.0.0.0:8000 behind a loopback port map, or
    127.0.0.1:`port` on the host network (multi-node Ray, seed 004)."""
    if docker.network_host:
        return replace(launch, host="127.0.0.1", port=port)
    return replace(launch, host="0.0.0.0", port=CONTAINER_PORT)


def docker_run_argv(
    model_name: str,
    docker: VllmDocker,
    launch: LaunchPlan,
    *,
    port: int,
    model_dir: Path | None = None,
    pass_env: tuple[str, ...] = (),
) -> list[str]:
    """`docker run ... IMAGE <server args>` serving `launch` (from container_launch) on 127.0.0.1:`port`.

    The environment (QUIET_ENV + launch_env) is passed as bare `-e NAME`, so Docker copies the values from the
    client's environment (the launch spec's env) and secrets such as HF_TOKEN never appear in `ps`.
    `model_dir` is mounted read-only at the same path.
    """
    argv = ["docker", "run", "--rm", "--init", "--name", container_name(model_name, port)]
    argv += ["--gpus", gpus_value(docker.gpus)]
    # PyTorch shares tensors between vLLM's processes through /dev/shm; Docker's default 64 MB is too small
    # (seed 002 mounted a Memory emptyDir at /dev/shm in k8s for the same reason).
    argv += ["--ipc=host"] if docker.ipc_host else ["--shm-size", str(docker.shm_size)]
    if docker.network_host:
        argv += ["--network", "host"]
    else:
        argv += ["-p", f"127.0.0.1:{port}:{CONTAINER_PORT}"]
    if docker.hf_cache:
        argv += ["-v", f"{Path(docker.hf_cache).expanduser()}:{CONTAINER_HF_CACHE}"]
    if model_dir is not None:
        argv += ["-v", f"{model_dir}:{model_dir}:ro"]
    for volume in docker.volumes:
        argv += ["-v", volume]
    for name in sorted({*QUIET_ENV, *launch_env(launch), *pass_env}):
        argv += ["-e", name]
    argv += list(docker.run_args)
    argv.append(docker.image)
    return argv + server_args(launch)


def docker_stop_argv(model_name: str, port: int) -> list[str]:
    """Removes the container if `docker run` is gone but the container is not (the client was SIGKILLed)."""
    return ["docker", "rm", "--force", container_name(model_name, port)]


def require_docker() -> str:
    """The path of the `docker` binary, or an EngineError saying how to get one."""
    path = shutil.which("docker")
    if path is None:
        raise EngineError(
            "launch: docker needs the `docker` binary, which is not on PATH; install Docker Engine and the"
            " NVIDIA Container Toolkit (for --gpus), or set launch: process with python: pointing at a vLLM"
            " environment"
        )
    return path
