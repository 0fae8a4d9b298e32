"""docker compose: one service per vLLM model and the gateway in front (compose-spec, `docker compose up`).

Files: `compose.yaml`, `gateway.yaml` (the gateway's gpufleet config, mounted read-only) and `.env.example`
(the `${VAR}`s the configs reference; copy to `.env`, which compose reads for interpolation and the gateway
gets as its env_file). Seed 000/001: the engines are pinned images, never `:latest`; a swap group's idle
members are in the `swap-<group>` profile, so `docker compose up` starts one member per GPU.
"""

from __future__ import annotations

from typing import Any

from gpufleet.deploy.fleet import EngineService, Fleet, refuse_multi_node, secret_env_files, with_allowed_hosts
from gpufleet.deploy.render import env_file, header, to_yaml
from gpufleet.engines.vllm_docker import CONTAINER_HF_CACHE, CONTAINER_PORT

GATEWAY_SERVICE = "gateway"
BUILD_CONTEXT = "${GPUFLEET_SRC:?set GPUFLEET_SRC in .env to a gpufleet checkout (the gateway image's build context)}"
GATEWAY_CONFIG = "/etc/gpufleet/gpufleet.yaml"
# The image has python3 but no promise of curl; /health answers 200 once the model is loaded.
_HEALTH = [
    "CMD",
    "python3",
    "-c",
    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{CONTAINER_PORT}/health', timeout=5)",
]


def _gpus(engine: EngineService) -> dict[str, Any]:
    device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
    if engine.gpu_ids is not None:
        device["device_ids"] = [str(i) for i in engine.gpu_ids]
    else:
        device["count"] = engine.launch.gpus_per_node
    return {"resources": {"reservations": {"devices": [device]}}}


def engine_service(engine: EngineService, hf_cache: str) -> dict[str, Any]:
    """The compose service of one vLLM engine."""
    service: dict[str, Any] = {"image": engine.launch.image, "command": engine.args}
    if not engine.active:
        service["profiles"] = [f"swap-{engine.swap_group}"]
    if engine.ipc_host:
        service["ipc"] = "host"  # PyTorch shares tensors through /dev/shm (Docker's 64 MB is too small)
    else:
        service["shm_size"] = engine.shm_size
    service["environment"] = dict(engine.env)
    volumes = [f"{hf_cache}:{CONTAINER_HF_CACHE}"]
    if engine.model_dir is not None:
        volumes.append(f"{engine.model_dir}:{engine.model_dir}:ro")
    service["volumes"] = volumes
    service["deploy"] = _gpus(engine)
    probes = engine.probes
    service["healthcheck"] = {
        "test": _HEALTH,
        "interval": f"{probes.period_s}s",
        "timeout": f"{probes.timeout_s}s",
        "retries": probes.liveness_failures,
        # Failures during the cold start do not count (seed 002: 120 s first load, ~20 s from cache).
        "start_period": f"{probes.startup_budget_s}s",
        "start_interval": "5s",
    }
    service["stop_grace_period"] = f"{engine.stop_grace_s}s"
    service["restart"] = "unless-stopped"
    return service


def compose_files(fleet: Fleet, *, source: str = "gpufleet.yaml") -> dict[str, str]:
    """`compose.yaml`, `gateway.yaml` and `.env.example` for `fleet`."""
    refuse_multi_node(fleet, "compose", source)
    services: dict[str, Any] = {e.service: engine_service(e, fleet.hf_cache) for e in fleet.engines}
    gateway: dict[str, Any] = {
        "image": fleet.gateway_image,
        # `docker compose up --build` (or `build`) makes the image from a gpufleet checkout: GPUFLEET_SRC in .env.
        "build": {"context": BUILD_CONTEXT, "dockerfile": "deploy/docker/Dockerfile"},
        "command": [
            "gpufleet",
            "serve",
            "--config",
            GATEWAY_CONFIG,
            "--host",
            "0.0.0.0",
            "--port",
            str(fleet.gateway_port),
        ],
        "ports": [f"{fleet.gateway_port}:{fleet.gateway_port}"],
        "volumes": [f"./gateway.yaml:{GATEWAY_CONFIG}:ro"],
        "env_file": [{"path": ".env", "required": False}],
        # Started, not healthy: the gateway answers 503 + Retry-After (or falls back) while an engine loads.
        "depends_on": {e.service: {"condition": "service_started"} for e in fleet.engines if e.active},
        "restart": "unless-stopped",
    }
    if not gateway["depends_on"]:
        del gateway["depends_on"]
    services[GATEWAY_SERVICE] = gateway
    compose = {"name": "gpufleet", "services": services}
    return {
        "compose.yaml": header(source, "docker compose: the vLLM engines and the gpufleet gateway") + to_yaml(compose),
        "gateway.yaml": header(source, "The gateway's gpufleet.yaml: vLLM models are the engine services")
        + to_yaml(with_allowed_hosts(fleet.gateway_config, [GATEWAY_SERVICE])),
        ".env.example": header(source, "Copy to .env and fill in: the ${VAR}s the configs reference")
        + env_file({}, (*fleet.env_names, "GPUFLEET_SRC")),
        **secret_env_files(fleet, source, ("GPUFLEET_SRC",)),
    }
