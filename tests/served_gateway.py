"""A real `gpufleet serve` subprocess on a free port: start it, wait until it is ready, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gpufleet.engine_supervisor.ports import free_port
from tests.repo_paths import REPO


@dataclass
class ServedGateway:
    """A `gpufleet serve` subprocess on a free port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self, name: str) -> dict[str, object]:
        models = httpx.get(f"{self.url}/status", timeout=10).json()["models"]
        return next(m for m in models if m["name"] == name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_gateway(config: Mapping[str, Any], tmp: Path, *, ready_timeout_s: float = 120) -> ServedGateway:
    """Start `gpufleet serve` with `config`, wait until /health/ready says 200."""
    port = free_port()
    cfg_path = tmp / "gpufleet.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli", "serve", "--config", str(cfg_path), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gpufleet serve exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return ServedGateway(process, port, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_gateway(ServedGateway(process, port, log_path))
    raise RuntimeError(f"gateway not ready in {ready_timeout_s} s:\n{log_path.read_text()[-3000:]}")


def stop_gateway(gateway: ServedGateway, sig: int = signal.SIGTERM) -> int:
    """Signal the gateway (SIGTERM: a graceful stop) and return its exit status; kill it after 30 s."""
    gateway.process.send_signal(sig)
    try:
        return gateway.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        return gateway.process.wait()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` (a gateway or an engine it started) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
