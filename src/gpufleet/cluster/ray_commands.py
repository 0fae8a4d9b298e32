"""Command lines and vLLM flags for multi-node serving over Ray (pure: config in, argv/env out).

    head:    <python> -m ray.scripts.scripts start --head --block --node-ip-address 10.0.0.1 --port 6379 ...
    worker:  <python> -m ray.scripts.scripts start --block --address 10.0.0.1:6379 --node-ip-address 10.0.0.2 ...
    vLLM:    ... --tensor-parallel-size 2 --distributed-executor-backend ray   (env RAY_ADDRESS=10.0.0.1:6379)

Ray is started through an interpreter (`-m ray.scripts.scripts`, the module behind the `ray` console script) so
the head and every worker run the Ray of the environment vLLM imports: a driver of another Ray version cannot
join the cluster. `--block` keeps `ray start` in the foreground, so gpufleet supervises it like an engine.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from gpufleet.cluster.ray_auth import auth_enabled, auth_env, token_path
from gpufleet.config import VllmModel
from gpufleet.planner.launch import LaunchPlan

RAY_MODULE = "ray.scripts.scripts"
DEFAULT_GCS_PORT = 6379
DEFAULT_DASHBOARD_PORT = 8265
LABEL_PREFIX = "gpufleet.io/"
# Ray node label values: like Kubernetes', at most 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def head_address(model: VllmModel) -> str:
    """`host:port` of the Ray GCS on the head (the first of `nodes:`)."""
    port = model.ray.port if model.ray else DEFAULT_GCS_PORT
    host = model.nodes[0]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def expected_gpus(model: VllmModel) -> int:
    """GPUs the cluster must show before vLLM starts: one per tensor × pipeline rank."""
    return model.tensor_parallel_size * model.pipeline_parallel_size


def distributed_launch(launch: LaunchPlan, model: VllmModel) -> LaunchPlan:
    """`launch` spread over `nodes:`: the Ray backend (unless extra_args name one) and RAY_ADDRESS pointing vLLM's
    driver at the head gpufleet runs. The pipeline size is a field of the record already."""
    if not model.nodes:
        return launch
    backend = None if "--distributed-executor-backend" in model.extra_args else "ray"  # seed 004: two Sparks
    # vLLM's driver joins the head's cluster, so it needs the head's token mode and token file too.
    auth = auth_env(token_path(model.ray)) if auth_enabled(model.ray) else {}
    return replace(
        launch,
        nodes=len(model.nodes),
        distributed_executor_backend=backend,
        env={"RAY_ADDRESS": head_address(model), **auth, **launch.env},
    )  # the config's own env wins


def ray_command(python: Path | str) -> list[str]:
    """`ray` of the environment behind `python`."""
    return [str(python), "-m", RAY_MODULE]


def label_value(value: str | None) -> str:
    """A fact as a Ray node label value; 'unknown' when absent, a shortened safe spelling otherwise."""
    if not value:
        return "unknown"
    if _LABEL_VALUE.match(value):
        return value
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", value)[:63].strip("_.-")
    return safe or "unknown"


def labels_arg(labels: dict[str, str]) -> str:
    """`--labels` value: `k1=v1,k2=v2` with gpufleet's prefix on every key."""
    return ",".join(f"{LABEL_PREFIX}{key}={label_value(value)}" for key, value in sorted(labels.items()))


def _resources(num_gpus: int | None, num_cpus: int | None, object_store_mib: int | None) -> list[str]:
    argv: list[str] = []
    if num_gpus is not None:
        argv += ["--num-gpus", str(num_gpus)]
    if num_cpus is not None:
        argv += ["--num-cpus", str(num_cpus)]
    if object_store_mib is not None:
        argv += ["--object-store-memory", str(object_store_mib * 1024 * 1024)]
    return argv


def head_start_argv(model: VllmModel, python: Path | str, temp_dir: Path, labels: dict[str, str]) -> list[str]:
    """`ray start --head --block` for a model's head: GCS on nodes[0]:port, dashboard on 127.0.0.1 only."""
    ray = model.ray
    port = ray.port if ray else DEFAULT_GCS_PORT
    dashboard = ray.dashboard_port if ray else DEFAULT_DASHBOARD_PORT
    num_gpus = ray.num_gpus if ray and ray.num_gpus is not None else model.gpus_per_node
    argv = [
        *ray_command(python),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        model.nodes[0],
        "--port",
        str(port),
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--disable-usage-stats",
        "--temp-dir",
        str(temp_dir),
    ]
    argv += _resources(num_gpus, ray.num_cpus if ray else None, ray.object_store_mib if ray else None)
    if labels:
        argv += ["--labels", labels_arg(labels)]
    return argv


def worker_start_argv(
    python: Path | str,
    head: str,
    node_ip: str,
    temp_dir: Path,
    labels: dict[str, str],
    *,
    num_gpus: int | None = None,
    num_cpus: int | None = None,
    object_store_mib: int | None = None,
) -> list[str]:
    """`ray start --block --address HEAD` for a worker (what `gpufleet node join` runs)."""
    argv = [
        *ray_command(python),
        "start",
        "--block",
        "--address",
        head,
        "--node-ip-address",
        node_ip,
        "--disable-usage-stats",
        "--temp-dir",
        str(temp_dir),
    ]
    argv += _resources(num_gpus, num_cpus, object_store_mib)
    if labels:
        argv += ["--labels", labels_arg(labels)]
    return argv


def split_head(head: str, default_port: int = DEFAULT_GCS_PORT) -> tuple[str, int]:
    """'10.0.0.1' / '10.0.0.1:6379' / '[fd00::1]:6379' → (host, port); ValueError when the port is not a number."""
    if head.startswith("["):
        host, _, rest = head[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif head.count(":") == 1:
        host, _, port_text = head.partition(":")
    else:
        host, port_text = head, ""
    if not host:
        raise ValueError(f"{head!r} names no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{head!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)
