"""`gpufleet deploy compose|k8s|systemd --config gpufleet.yaml -o DIR`: deployment files from one config.

    gpufleet deploy compose --config gpufleet.yaml -o deploy/out     # then: docker compose -f ... up -d
    gpufleet deploy k8s --config gpufleet.yaml -o k8s/               # then: kubectl apply -f k8s/
    gpufleet deploy k8s --config gpufleet.yaml --swap r1             # the kubectl lines of seed 002's gpu-mode r1
    gpufleet deploy systemd --config gpufleet.yaml -o unit/

Exit codes: 0 written (or printed), 2 bad config, an unknown model or bad options (one line naming it).
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from gpufleet.config import load_config
from gpufleet.deploy import build_fleet, compose_files, k8s_files, swap_commands, systemd_files
from gpufleet.deploy.fleet import DEFAULT_GATEWAY_IMAGE, DEFAULT_HF_CACHE, Fleet
from gpufleet.errors import ConfigError
from gpufleet.gateway.auth import is_loopback
from gpufleet.planner import DEFAULT_VLLM_VERSION


class Target(StrEnum):
    """What to generate."""

    compose = "compose"
    k8s = "k8s"
    systemd = "systemd"


def load_fleet(config: Path, *, vllm_version: str, hf_cache: str, gateway_image: str) -> Fleet:
    """The fleet of a config file; ConfigError (file, key path, reason) when it cannot be deployed."""
    load_config(config, expand_env=False)  # file-level errors (missing, bad YAML, duplicate keys) with the line
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    return build_fleet(raw, file=str(config), vllm_version=vllm_version, hf_cache=hf_cache, gateway_image=gateway_image)


# Files that hold secret values (deploy/secret_lift.py): readable by their owner only.
SECRET_FILES = (".env", "gpufleet.env")


def write_files(out: Path, files: dict[str, str]) -> list[Path]:
    """Write `files` (relative names) under `out`, env files with mode 0600, the rest 0644; the paths written."""
    written = []
    for name, text in files.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o600 if Path(name).name in SECRET_FILES else 0o644
        path.unlink(missing_ok=True)  # a new file gets `mode` from the start, never a moment readable by others
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(path, mode)  # the umask may have taken bits away
        written.append(path)
    return written


def exposure_warning(target: str, fleet: Fleet) -> str | None:
    """A warning when the generated gateway is reachable from the network without API keys."""
    server = fleet.source_config.get("server") or {}
    if server.get("api_keys"):
        return None
    host = str(server.get("host", "127.0.0.1"))
    if target == "systemd" and is_loopback(host):
        return None
    where = f"{host}:{server.get('port', 8000)}" if target == "systemd" else f"0.0.0.0:{fleet.gateway_port}"
    return (
        f"the generated gateway listens on {where} without server.api_keys: anyone who reaches it can use every"
        ' model. Set server.api_keys: ["${GPUFLEET_KEY}"] in the config and GPUFLEET_KEY in the env file'
    )


def register(app: typer.Typer) -> None:
    """Add `gpufleet deploy`."""

    @app.command("deploy")
    def deploy_cmd(
        target: Annotated[Target, typer.Argument(help="compose, k8s or systemd")],
        config: Annotated[Path, typer.Option("--config", "-c", help="the gpufleet.yaml to deploy")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="directory to write the files to")] = None,
        vllm_version: Annotated[
            str, typer.Option("--vllm-version", help="image version of vLLM models that pin none")
        ] = DEFAULT_VLLM_VERSION,
        hf_cache: Annotated[
            str, typer.Option("--hf-cache", help="host directory of the Hugging Face cache (hostPath in k8s)")
        ] = DEFAULT_HF_CACHE,
        gateway_image: Annotated[str, typer.Option("--gateway-image", help="image of the gateway")] = (
            DEFAULT_GATEWAY_IMAGE
        ),
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="k8s: the namespace")] = "gpufleet",
        pvc: Annotated[
            str | None, typer.Option("--pvc", help="k8s: a PersistentVolumeClaim for the model cache, not hostPath")
        ] = None,
        swap: Annotated[
            str | None, typer.Option("--swap", help="k8s: print the kubectl commands that bring MODEL onto its GPU")
        ] = None,
        runtime_class: Annotated[
            str | None, typer.Option("--runtime-class", help="k8s: runtimeClassName of the engine pods (k3s: nvidia)")
        ] = None,
        executable: Annotated[
            str | None, typer.Option("--exec", help="systemd: the gpufleet command on the host (default: this one)")
        ] = None,
    ) -> None:
        """Generate docker compose, Kubernetes or systemd files for the models in a gpufleet.yaml."""
        if swap is not None and target is not Target.k8s:
            raise ConfigError("--swap is for k8s (compose and systemd swap inside the gateway: gpufleet swap MODEL)")
        if swap is None and out is None:
            raise ConfigError("say where to write the files: -o DIR")
        fleet = load_fleet(config, vllm_version=vllm_version, hf_cache=hf_cache, gateway_image=gateway_image)
        if swap is not None:
            for line in swap_commands(fleet, swap, namespace=namespace):
                typer.echo(line)
            return
        assert out is not None
        source = config.name
        if target is Target.compose:
            files = compose_files(fleet, source=source)
        elif target is Target.k8s:
            files = k8s_files(fleet, namespace=namespace, pvc=pvc, source=source, runtime_class=runtime_class)
        else:
            files = systemd_files(
                fleet, executable=executable or str(Path(sys.executable).with_name("gpufleet")), source=source
            )
        for engine in fleet.engines:
            for warning in engine.warnings:
                typer.echo(f"warning: models.{engine.name}: {warning}", err=True)
        if (exposed := exposure_warning(target.value, fleet)) is not None:
            typer.echo(f"warning: {exposed}", err=True)
        for path in write_files(out, files):
            typer.echo(str(path))
