"""A gpufleet.yaml seen as a fleet: one engine service per vLLM model, and the gateway in front of them.

Each vLLM model becomes an `EngineService`: its launch record (the same `LaunchPlan` the gateway would launch,
with the planner's values when `plan: true`) pinned to a `vllm/vllm-openai:v<version>` image and listening on
0.0.0.0:8000 in its container, plus what an orchestrator needs around it (GPUs, /dev/shm, caches, probes).
The gateway's own config is the input config with each vLLM model replaced by a `remote` model pointing at that
service, so routes, aliases, fallbacks, personas and `auto` work unchanged in front of the containers.

`${VAR}` references are kept as written (load the config with `expand_env=False`): the target fills them at
run time (compose from .env, Kubernetes from a Secret, systemd from the env file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from gpufleet import __version__
from gpufleet.config import Config, VllmModel, parse_config
from gpufleet.deploy.probes import ProbeTiming, probe_timing
from gpufleet.deploy.render import env_file, header
from gpufleet.deploy.secret_lift import lift_secrets
from gpufleet.engines.vllm_docker import CONTAINER_PORT, image_vllm_version, local_model_dir
from gpufleet.engines.vllm_resolve import finish_launch, resolve_model
from gpufleet.errors import ConfigError, EngineError
from gpufleet.planner import DEFAULT_VLLM_VERSION
from gpufleet.planner.launch import LaunchPlan, server_args

IMAGE_REPOSITORY = "vllm/vllm-openai"
DEFAULT_GATEWAY_IMAGE = f"gpufleet:{__version__}"  # built from deploy/docker/Dockerfile (docs/deploy.md)
DEFAULT_HF_CACHE = "/var/lib/gpufleet/huggingface"  # seed 002: a hostPath cache, not NFS
GATEWAY_PORT = 8000
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")
# Keys a `remote` model shares with a vLLM model: what clients see of it (names, fallbacks, defaults).
_CLIENT_FACING = ("aliases", "listed", "fallbacks", "defaults")


@dataclass(frozen=True)
class EngineService:
    """One vLLM server as a container: its launch record and what runs around it."""

    name: str  # the model's name in gpufleet.yaml
    service: str  # DNS-safe name of the container / Deployment / Service: vllm-<name>
    launch: LaunchPlan  # image, version and host/port (0.0.0.0:8000) set
    env: dict[str, str]  # QUIET_ENV + the settings' env + the config's (values may hold ${VAR})
    probes: ProbeTiming
    stop_grace_s: int
    gpu_ids: tuple[int, ...] | None  # docker.gpus as device ids; None: any launch.gpus_per_node GPUs
    ipc_host: bool
    shm_size: str | None
    model_dir: str | None  # a local model directory, mounted read-only at the same path
    swap_group: str | None
    active: bool  # running after the first deploy (one member per swap group)
    warnings: tuple[str, ...] = ()

    @property
    def args(self) -> list[str]:
        """The image entrypoint's arguments: `--model M` + the rendered flags + --host/--port."""
        return server_args(self.launch)

    @property
    def url(self) -> str:
        """The OpenAI base URL other services reach it at."""
        return f"http://{self.service}:{CONTAINER_PORT}/v1"


@dataclass(frozen=True)
class Fleet:
    """Everything the generators need: the engines, the gateway's config, the variables to provide."""

    engines: tuple[EngineService, ...]
    gateway_config: dict[str, Any]  # gpufleet.yaml for the gateway container (vLLM models as remote)
    source_config: dict[str, Any]  # the input, as written (systemd runs it as is)
    env_names: tuple[str, ...]  # ${VAR}s the configs reference
    hf_cache: str
    gateway_image: str
    gateway_port: int = GATEWAY_PORT
    # Literal secrets lifted out of the config (deploy/secret_lift.py): written only to a 0600 env file.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    def engine(self, name: str) -> EngineService:
        """The engine of model `name`; ConfigError naming the vLLM models when there is none."""
        for engine in self.engines:
            if engine.name == name:
                return engine
        known = ", ".join(e.name for e in self.engines) or "none"
        raise ConfigError(f"no vLLM model named {name!r} in this config (vLLM models: {known})")


def refuse_multi_node(fleet: Fleet, target: str, source: str) -> None:
    """ConfigError for a model with `nodes:` in a container target: gpufleet runs that Ray cluster itself
    (the head beside the gateway, `gpufleet node join` on workers), which only the systemd target sets up."""
    for name, model in fleet.source_config.get("models", {}).items():
        if isinstance(model, dict) and model.get("nodes"):
            raise ConfigError(
                f"a multi-node model (nodes:) is deployed with `gpufleet deploy systemd`, not {target}: "
                "gpufleet runs its Ray head and the workers run `gpufleet node join` "
                "(docs/multi-node.md)",
                file=source,
                key_path=f"models.{name}.nodes",
            )


def service_name(model_name: str) -> str:
    """`vllm-<name>` as a DNS-1035 label (Kubernetes Service names, compose hostnames): `qwen2.5-coder` ->
    `vllm-qwen2-5-coder`, at most 63 characters."""
    label = _DNS_UNSAFE.sub("-", model_name.lower()).strip("-")
    return f"vllm-{label}"[:63].rstrip("-")


def env_references(data: Any) -> set[str]:
    """Names of the `${VAR}` references anywhere in loaded YAML data."""
    if isinstance(data, str):
        return set(ENV_REF.findall(data))
    if isinstance(data, dict):
        return set().union(*(env_references(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(env_references(v) for v in data)) if data else set()
    return set()


def _engine_version(model: VllmModel, default: str) -> str | None:
    """The vLLM the image runs: the config's pin, the image tag's version, else `default`."""
    if model.vllm_version:
        return model.vllm_version
    if model.docker is not None:
        return image_vllm_version(model.docker.image)  # None for a digest: flags cannot be checked
    return default


def _engine(name: str, model: VllmModel, *, file: str, default_version: str, active: bool) -> EngineService:
    where = f"models.{name}"
    if model.device == "cpu":
        raise ConfigError(
            "device: cpu cannot be deployed as a vllm/vllm-openai container (that image is CUDA-only);"
            " run it under `gpufleet serve` (gpufleet deploy systemd) instead",
            file=file,
            key_path=f"{where}.device",
        )
    version = _engine_version(model, default_version)
    image = model.docker.image if model.docker is not None else f"{IMAGE_REPOSITORY}:v{version}"
    try:
        resolved = resolve_model(name, model, version)
        launch = replace(resolved.launch, image=image, host="0.0.0.0", port=CONTAINER_PORT)
        finished = finish_launch(launch, version, image)
    except EngineError as err:
        raise ConfigError(str(err), file=file, key_path=where) from None
    env = finished.env
    warnings = [*(f"plan: {w}" for w in (resolved.plan.warnings if resolved.plan else ())), *finished.warnings]
    docker = model.docker
    model_dir = local_model_dir(model.model)
    return EngineService(
        name=name,
        service=service_name(name),
        launch=launch,
        env=env,
        probes=probe_timing(model.ready_timeout_s),
        stop_grace_s=int(model.stop_grace_s),
        gpu_ids=tuple(docker.gpus) if docker is not None and isinstance(docker.gpus, list) else None,
        ipc_host=docker.ipc_host if docker is not None else True,
        shm_size=docker.shm_size if docker is not None else None,
        model_dir=str(model_dir) if model_dir is not None else None,
        swap_group=model.swap_group,
        active=active,
        warnings=tuple(warnings),
    )


def _active_members(config: Config) -> set[str]:
    """Models running after the first deploy: all but the idle members of swap groups (one member per group
    runs: the first with `preload: true`, else the first listed)."""
    chosen: dict[str, str] = {}
    for name, model in config.models.items():
        group = model.swap_group
        if group is None:
            continue
        if group not in chosen or (model.preload and not config.models[chosen[group]].preload):
            chosen[group] = name
    return {
        name for name, model in config.models.items() if model.swap_group is None or chosen[model.swap_group] == name
    }


def secret_env_files(fleet: Fleet, source: str, more_names: tuple[str, ...] = ()) -> dict[str, str]:
    """`.env` with the secrets lifted out of the config (mode 0600 when written); none when there were none."""
    if not fleet.secrets:
        return {}
    return {
        ".env": header(source, "Secrets lifted out of the config (keep this file mode 0600; fill in the rest)")
        + env_file(fleet.secrets, (*fleet.env_names, *more_names))
    }


def with_allowed_hosts(gateway_config: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The gateway config with `names` (the container's service names) added to `server.allowed_hosts`: the
    gateway refuses any other `Host` (its DNS-rebinding guard), and clients in the cluster use these names."""
    server = dict(gateway_config.get("server") or {})
    listed = list(server.get("allowed_hosts") or [])
    server["allowed_hosts"] = listed + [name for name in names if name not in listed]
    return {**gateway_config, "server": server}


def _gateway_config(
    raw: dict[str, Any], engines: tuple[EngineService, ...], request_timeout_s: float, file: str
) -> dict[str, Any]:
    """The input config with every vLLM model turned into a `remote` model at its service's URL."""
    models = dict(raw["models"])
    for engine in engines:
        written = models[engine.name]
        remote: dict[str, Any] = {
            "engine": "remote",
            "url": engine.url,
            "upstream_model": engine.name,
            "timeout_s": request_timeout_s,
        }
        remote.update({key: written[key] for key in _CLIENT_FACING if key in written})
        models[engine.name] = remote
    gateway = {**raw, "models": models}
    if "swap_groups" in raw:
        used = {m.get("swap_group") for m in models.values() if isinstance(m, dict)}
        groups = {name: group for name, group in raw["swap_groups"].items() if name in used}
        if groups:
            gateway["swap_groups"] = groups
        else:
            del gateway["swap_groups"]
    parse_config(gateway, file=f"{file} (as the gateway's config)", expand_env=False)  # it must load as is
    return gateway


def build_fleet(
    raw: dict[str, Any],
    *,
    file: str = "gpufleet.yaml",
    vllm_version: str = DEFAULT_VLLM_VERSION,
    hf_cache: str = DEFAULT_HF_CACHE,
    gateway_image: str = DEFAULT_GATEWAY_IMAGE,
) -> Fleet:
    """The fleet of loaded YAML data `raw` (not env-expanded); ConfigError (file, key path, reason) when a
    model cannot be deployed. `vllm_version` pins the image of vLLM models that name no version or image."""
    raw, secrets = lift_secrets(raw)  # from here on the config holds ${VAR}s where it held keys and passwords
    config = parse_config(raw, file=file, expand_env=False)
    active = _active_members(config)
    engines = tuple(
        _engine(name, model, file=file, default_version=vllm_version, active=name in active)
        for name, model in config.models.items()
        if isinstance(model, VllmModel)
    )
    seen: dict[str, str] = {}
    for engine in engines:
        if engine.service in seen:
            raise ConfigError(
                f"service name {engine.service!r} is also {seen[engine.service]}'s; rename one model",
                file=file,
                key_path=f"models.{engine.name}",
            )
        seen[engine.service] = engine.name
    gateway = _gateway_config(raw, engines, config.server.request_timeout_s, file)
    names = env_references(gateway) | {n for e in engines for n in env_references(e.env)}
    return Fleet(
        engines=engines,
        gateway_config=gateway,
        source_config=raw,
        env_names=tuple(sorted(names)),
        secrets=secrets,
        hf_cache=hf_cache,
        gateway_image=gateway_image,
    )
