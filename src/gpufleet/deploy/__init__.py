"""Deploy generators: docker compose, Kubernetes and systemd files from one gpufleet.yaml (docs/deploy.md).

    fleet = build_fleet(load_config(path, expand_env=False), file=str(path))
    files = compose_files(fleet)            # {"compose.yaml": ..., "gateway.yaml": ..., ".env.example": ...}

`fleet` turns each vLLM model into an engine service around its launch record (planner/launch.py, the same
record and renderer the gateway launches from) and the gateway's config into one that reaches those services
as `remote` upstreams; `compose`, `k8s` and `systemd` each write one target's files. Pure: nothing here
touches Docker, a cluster or systemd.
"""

from __future__ import annotations

from gpufleet.deploy.compose import compose_files
from gpufleet.deploy.fleet import EngineService, Fleet, build_fleet
from gpufleet.deploy.k8s import k8s_files, swap_commands
from gpufleet.deploy.systemd import ray_worker_units, systemd_files

__all__ = [
    "EngineService",
    "Fleet",
    "build_fleet",
    "compose_files",
    "k8s_files",
    "ray_worker_units",
    "swap_commands",
    "systemd_files",
]
