"""systemd: `gpufleet serve` as a service on the GPU host (seed 003's unit), and units for Ray workers.

Here the gateway launches its engines itself (a local vLLM process or a pinned container, as in `gpufleet
serve`), so the input config is installed as is. Files: `gpufleet.service`, `gpufleet.env` (the `${VAR}`s the
config references, plus where caches go) and `gpufleet.yaml`. The unit restarts on failure and runs with
systemd's hardening that a GPU process tolerates: no new privileges, a read-only system, private /tmp, no
kernel tunables; devices stay visible (vLLM needs /dev/nvidia*), and memory may be executable (CUDA and
torch.compile JIT-compile kernels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gpufleet.cluster.ray_commands import head_address
from gpufleet.config import VllmModel, parse_config
from gpufleet.deploy.fleet import Fleet
from gpufleet.deploy.render import env_file, header, to_yaml

CONFIG_DIR = "/etc/gpufleet"
STATE_DIR = "/var/lib/gpufleet"  # systemd's StateDirectory=gpufleet: caches, assembled models, engine venvs
SERVICE_USER = "gpufleet"
# What every gpufleet unit gets from systemd's sandboxing (systemd.exec(5)); each line is a reason a GPU
# server does not need that part of the system.
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    # An unprivileged user needs no capability (the docker client talks to the daemon's socket instead).
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "UMask=0077",  # caches, logs and the Ray token: the service's own
    "RemoveIPC=yes",
    "PrivateMounts=yes",
    "ProtectProc=invisible",  # other users' processes (and their command lines) are not its business
)


# Where a sandboxed unit may write: its StateDirectory. vLLM (torch compile cache, HF), Ray (~/.ray, session dirs)
# and Triton write under $HOME and the XDG cache; without these they fail on ProtectSystem=strict + ProtectHome.
WRITABLE_ENV = (f"Environment=HOME={STATE_DIR}", f"Environment=XDG_CACHE_HOME={STATE_DIR}/.cache")
# Pinned host memory (vLLM's CPU swap space and offload, NCCL) counts against RLIMIT_MEMLOCK, 8 MiB by default.
MEMLOCK = "LimitMEMLOCK=infinity"
_HIDDEN_BY_PROTECT_HOME = ("/home/", "/root/", "/run/user/")


def protect_home(*paths: str | None) -> str:
    """`ProtectHome=yes`, or `read-only` when the command or an interpreter it runs lives in a home directory
    (`yes` would hide it and the unit would fail with status 203/EXEC)."""
    if any(p and p.startswith(_HIDDEN_BY_PROTECT_HOME) for p in paths):
        return "ProtectHome=read-only"
    return "ProtectHome=yes"


def _unit(
    description: str,
    exec_start: str,
    *,
    stop_timeout_s: int,
    user: str,
    extra: Sequence[str] = (),
    home: str = "ProtectHome=yes",
) -> str:
    lines = [
        "[Unit]",
        f"Description={description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={user}",
        "StateDirectory=gpufleet",
        f"EnvironmentFile={CONFIG_DIR}/gpufleet.env",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM to gpufleet only: it stops its engines (SIGTERM, grace, SIGKILL); then systemd kills the rest.
        "KillMode=mixed",
        f"TimeoutStopSec={stop_timeout_s}",
        *WRITABLE_ENV,
        MEMLOCK,
        *extra,
        home,
        *HARDENING,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def systemd_files(
    fleet: Fleet, *, executable: str, user: str = SERVICE_USER, source: str = "gpufleet.yaml"
) -> dict[str, str]:
    """`gpufleet.service`, `gpufleet.env` and `gpufleet.yaml` (install under /etc/systemd/system and
    /etc/gpufleet). `executable` is the gpufleet console script on the target host."""
    models = fleet.source_config.get("models", {})
    # The longest engine stop grace, plus the gateway's own shutdown.
    grace = max([int(m.get("stop_grace_s", 30)) for m in models.values() if isinstance(m, dict)] + [30]) + 15
    port = fleet.source_config.get("server", {}).get("port", 8000)
    exec_start = f"{executable} serve --config {CONFIG_DIR}/gpufleet.yaml --port {port}"
    env = {"GPUFLEET_CACHE": f"{STATE_DIR}/cache", "HF_HOME": f"{STATE_DIR}/huggingface"}
    # `launch: docker` models are started with the docker client, which needs the daemon's socket.
    docker = any(isinstance(m, dict) and m.get("launch") == "docker" for m in models.values())
    files = {
        "gpufleet.service": _unit(
            "gpufleet: OpenAI-compatible LLM gateway and its engines",
            exec_start,
            stop_timeout_s=grace,
            user=user,
            extra=("SupplementaryGroups=docker",) if docker else (),
            home=protect_home(executable, *_pythons(models)),
        ),
        "gpufleet.env": header(source, "Environment of gpufleet.service (fill in the empty ${VAR}s)")
        + env_file({**env, **fleet.secrets}, fleet.env_names),
        "gpufleet.yaml": header(source, "gpufleet's config as installed for the service")
        + to_yaml(fleet.source_config),
    }
    # Multi-node models (`nodes:`, seed 004): the head is this unit's host; each worker gets a join unit.
    config = parse_config(fleet.source_config, file=source, expand_env=False)
    for model in config.models.values():
        if isinstance(model, VllmModel) and model.nodes:
            # A `ray:` block without its own python still means the model's (vLLM's) interpreter.
            python = model.ray.python if model.ray and model.ray.python else model.python
            network_env = {k: v for k, v in model.env.items() if k.startswith(_WORKER_ENV_PREFIXES)}
            files.update(
                ray_worker_units(
                    head_address(model),
                    model.nodes[1:],
                    executable=executable,
                    user=user,
                    num_gpus=model.gpus_per_node,
                    python=python,
                    env=network_env,
                )
            )
    return files


# The model's environment a worker needs too: which interface NCCL and Gloo use between the nodes.
_WORKER_ENV_PREFIXES = ("NCCL_", "GLOO_")
RAY_TOKEN_FILE = f"{CONFIG_DIR}/ray-token"  # a copy of the head's <cache>/ray/auth_token, mode 0600


def ray_worker_units(
    head: str,
    worker_addresses: Sequence[str],
    *,
    executable: str,
    user: str = SERVICE_USER,
    num_gpus: int | None = None,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Multi-node models (`nodes:`, seed 004): one unit file per worker host that joins the Ray cluster whose
    head is `head` (HOST:PORT) with `gpufleet node join` (docs/multi-node.md).

    Returns {"<worker>/gpufleet-ray-worker.service": unit text}.
    """
    units: dict[str, str] = {}
    for worker in worker_addresses:
        command = f"{executable} node join {head} --node-ip {worker} --token-file {RAY_TOKEN_FILE}"
        if num_gpus is not None:
            command += f" --num-gpus {num_gpus}"
        if python:
            command += f" --python {python}"  # vLLM's environment: its Ray must be the head's version
        extra = [f"Environment={key}={value}" for key, value in sorted((env or {}).items())]
        unit = _unit(
            f"gpufleet: Ray worker {worker} of the cluster at {head}",
            command,
            stop_timeout_s=60,
            user=user,
            extra=extra,
            home=protect_home(executable, python),
        )
        units[f"{_safe(worker)}/gpufleet-ray-worker.service"] = unit
    return units


def _pythons(models: dict[str, object]) -> list[str]:
    return [str(m[key]) for m in models.values() if isinstance(m, dict) for key in ("python",) if m.get(key)]


def _safe(address: str) -> str:
    """A host address as a directory name (IPv6 colons and ports become '-')."""
    return Path(address.replace(":", "-").replace("/", "-")).name
