"""Kubernetes manifests: per vLLM model a Deployment and a Service; the gateway in front.

Seed 002's lessons, kept: `strategy: Recreate` (a rolling update would need a second set of free GPUs, so the
new pod would wait forever for the old one's GPU), `nvidia.com/gpu` limits, /dev/shm as an emptyDir with
medium Memory (vLLM's workers share tensors through it), a hostPath model cache (not NFS) or a PVC, and a
startupProbe that outlives the cold start. A swap group's members are mutually exclusive Deployments on one GPU:
one has `replicas: 1`, the others 0, and `swap_commands` prints the scale commands (the seed's `gpu-mode ml|r1`).
"""

from __future__ import annotations

import shlex
from typing import Any

from gpufleet.deploy.fleet import (
    ENV_REF,
    EngineService,
    Fleet,
    refuse_multi_node,
    secret_env_files,
    with_allowed_hosts,
)
from gpufleet.deploy.render import header, to_yaml, to_yaml_documents
from gpufleet.engines.vllm_docker import CONTAINER_HF_CACHE, CONTAINER_PORT
from gpufleet.errors import ConfigError

PART_OF = "gpufleet"
GATEWAY = "gpufleet-gateway"
CONFIG_MAP = "gpufleet-config"
DEFAULT_SHM = "8Gi"
ENGINE_REQUESTS = {"cpu": "2", "memory": "16Gi"}  # vLLM's API server + engine core while loading weights
GATEWAY_REQUESTS = {"cpu": "250m", "memory": "512Mi"}
SECRET = "gpufleet-env"  # the ${VAR}s: `kubectl create secret generic gpufleet-env --from-env-file=.env`
SWAP_GROUP_LABEL = "gpufleet.dev/swap-group"


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels}


def _env(values: dict[str, str]) -> list[dict[str, Any]]:
    """Container env; a value that is exactly `${VAR}` comes from the Secret (never written into a manifest)."""
    out: list[dict[str, Any]] = []
    for key, value in values.items():
        ref = ENV_REF.fullmatch(value)
        if ref is not None:
            # optional: a pod starts without, e.g., HF_TOKEN (public models need none); gpufleet says what is missing.
            out.append(
                {"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": ref.group(1), "optional": True}}}
            )
        elif ENV_REF.search(value):
            raise ConfigError(
                f"env {key}: Kubernetes cannot fill a ${{VAR}} inside a longer value ({value!r});"
                " make the whole value one ${VAR}"
            )
        else:
            out.append({"name": key, "value": value})
    return out


def _quantity(docker_size: str) -> str:
    """Docker's `8g`/`512m` as a Kubernetes quantity (`8Gi`/`512Mi`); plain bytes stay as they are."""
    size = docker_size.strip().upper().removesuffix("B")
    return size if size[-1:].isdigit() else size + "i"


def _http_probe(period_s: int, failures: int, timeout_s: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": timeout_s,
    }


def _cache_volume(fleet: Fleet, pvc: str | None) -> dict[str, Any]:
    if pvc is not None:
        return {"name": "hf-cache", "persistentVolumeClaim": {"claimName": pvc}}
    return {"name": "hf-cache", "hostPath": {"path": fleet.hf_cache, "type": "DirectoryOrCreate"}}


def engine_objects(
    engine: EngineService, fleet: Fleet, namespace: str, pvc: str | None, runtime_class: str | None = None
) -> list[dict[str, Any]]:
    """Deployment and Service of one vLLM engine (`runtime_class`: e.g. k3s's `nvidia`)."""
    labels = {**_labels(engine.service, "engine"), "app.kubernetes.io/instance": engine.service}
    selector = {"app.kubernetes.io/instance": engine.service}
    mounts, volumes = _engine_storage(engine, fleet, pvc)
    metadata = _meta(engine.service, namespace, labels)
    if engine.swap_group:
        metadata["annotations"] = {SWAP_GROUP_LABEL: engine.swap_group}
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": engine.stop_grace_s,
        "containers": [_engine_container(engine, mounts)],
        "volumes": volumes,
    }
    if runtime_class:
        pod["runtimeClassName"] = runtime_class  # k3s's NVIDIA runtime is a RuntimeClass, not the default
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1 if engine.active else 0,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(engine.service, namespace, labels),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": "http"}]},
    }
    # No PodDisruptionBudget: with one replica on one GPU it could only say "may be evicted", the default.
    return [deployment, service]


def _engine_storage(
    engine: EngineService, fleet: Fleet, pvc: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The engine container's mounts and the pod's volumes: /dev/shm, the model cache, a local model dir."""
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "hf-cache", "mountPath": CONTAINER_HF_CACHE},
    ]
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}, _cache_volume(fleet, pvc)]
    # A Memory emptyDir counts against the pod's memory: bound it (the model's docker.shm_size, else 8 GiB).
    volumes[0]["emptyDir"]["sizeLimit"] = _quantity(engine.shm_size) if engine.shm_size else DEFAULT_SHM
    if engine.model_dir is not None:
        mounts.append({"name": "model", "mountPath": engine.model_dir, "readOnly": True})
        volumes.append({"name": "model", "hostPath": {"path": engine.model_dir, "type": "Directory"}})
    return mounts, volumes


def _engine_container(engine: EngineService, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The vLLM container: image, args, env, GPU limits and the probes that cover a cold start."""
    probes = engine.probes
    gpus = str(engine.launch.gpus_per_node)
    return {
        "name": "vllm",
        "image": engine.launch.image,
        "args": engine.args,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT}],
        "env": _env(engine.env),
        # Requests let the scheduler place the pod where the host has room to load the weights.
        "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus, **ENGINE_REQUESTS}},
        "volumeMounts": mounts,
        # /health answers once the weights are loaded: the startup probe covers the whole cold start, then
        # liveness restarts a hung server and readiness keeps traffic off it.
        "startupProbe": _http_probe(probes.period_s, probes.startup_failure_threshold, probes.timeout_s),
        "livenessProbe": _http_probe(probes.period_s, probes.liveness_failures, probes.timeout_s),
        "readinessProbe": _http_probe(probes.readiness_period_s, 1, probes.timeout_s),
    }


def gateway_objects(fleet: Fleet, namespace: str, config_text: str) -> list[dict[str, Any]]:
    """ConfigMap (the gateway's gpufleet.yaml), Deployment and Service of the gateway."""
    labels = {**_labels(GATEWAY, "gateway"), "app.kubernetes.io/instance": GATEWAY}
    selector = {"app.kubernetes.io/instance": GATEWAY}
    port = fleet.gateway_port
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(CONFIG_MAP, namespace, labels),
        "data": {"gpufleet.yaml": config_text},
    }
    container = {
        "name": "gateway",
        "image": fleet.gateway_image,
        "args": [
            "gpufleet",
            "serve",
            "--config",
            "/etc/gpufleet/gpufleet.yaml",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        "ports": [{"name": "http", "containerPort": port}],
        "envFrom": [{"secretRef": {"name": SECRET, "optional": True}}],
        "resources": {"requests": dict(GATEWAY_REQUESTS)},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/gpufleet", "readOnly": True}],
        "livenessProbe": _http_probe(10, 3, 5),
        # /health/ready: 503 until the gateway's own preloaded (embedded) models are up.
        "readinessProbe": {**_http_probe(5, 1, 5), "httpGet": {"path": "/health/ready", "port": "http"}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(GATEWAY, namespace, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": CONFIG_MAP}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(GATEWAY, namespace, labels),
        "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": "http"}]},
    }
    return [config_map, deployment, service]


def k8s_files(
    fleet: Fleet,
    *,
    namespace: str = "gpufleet",
    pvc: str | None = None,
    source: str = "gpufleet.yaml",
    runtime_class: str | None = None,
) -> dict[str, str]:
    """One manifest file per engine, one for the gateway, one for the namespace (`kubectl apply -f DIR`)."""
    refuse_multi_node(fleet, "k8s", source)
    files = {
        "00-namespace.yaml": header(source, f"Namespace {namespace}")
        + to_yaml_documents([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    }
    for engine in fleet.engines:
        files[f"{engine.service}.yaml"] = header(source, f"vLLM engine for model {engine.name}") + to_yaml_documents(
            engine_objects(engine, fleet, namespace, pvc, runtime_class)
        )
    service_names = [
        GATEWAY,
        f"{GATEWAY}.{namespace}",
        f"{GATEWAY}.{namespace}.svc",
        f"{GATEWAY}.{namespace}.svc.cluster.local",
    ]
    files["gateway.yaml"] = header(source, "The gpufleet gateway in front of the engines") + to_yaml_documents(
        gateway_objects(fleet, namespace, to_yaml(with_allowed_hosts(fleet.gateway_config, service_names)))
    )
    files.update(secret_env_files(fleet, source))  # for `kubectl create secret generic gpufleet-env --from-env-file`
    return files


def swap_commands(fleet: Fleet, model: str, *, namespace: str = "gpufleet") -> list[str]:
    """kubectl commands that bring `model` onto its swap group's GPU: scale the others to 0, wait for their pods
    to be gone (the GPU is free only then), scale `model` to 1 and wait until it is ready."""
    engine = fleet.engine(model)
    if engine.swap_group is None:
        raise ConfigError(f"model {model!r} is in no swap group; --swap brings a swap-group member onto its GPU")
    ns = shlex.quote(namespace)
    others = [e for e in fleet.engines if e.swap_group == engine.swap_group and e.name != model]
    commands = [f"kubectl -n {ns} scale deployment/{e.service} --replicas=0" for e in others]
    commands += [
        f"kubectl -n {ns} wait --for=delete pod -l app.kubernetes.io/instance={e.service}"
        f" --timeout={e.stop_grace_s + 60}s"
        for e in others
    ]
    commands.append(f"kubectl -n {ns} scale deployment/{engine.service} --replicas=1")
    commands.append(
        f"kubectl -n {ns} rollout status deployment/{engine.service} --timeout={engine.probes.startup_budget_s + 60}s"
    )
    return commands
