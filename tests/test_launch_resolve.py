"""A model's launch is resolved once, before the supervisor starts it (engines/vllm_resolve.py, issue 22).

`gpufleet serve` resolves every managed model first, so a `plan: true` model that does not fit is exit 2 naming
its key, not a 503 at its first request; a restart reuses the record instead of planning again. The engine is
the STAND-IN vLLM of tests/standin_vllm (not vLLM).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpufleet.config import VllmModel, parse_config
from gpufleet.engine_supervisor import Supervisor
from gpufleet.engines import resolve_launches
from gpufleet.engines.base import LaunchSpec
from gpufleet.engines.vllm_engine import VllmEngine
from gpufleet.engines.vllm_resolve import VllmLaunch
from gpufleet.errors import ConfigError
from tests.repo_paths import REPO
from tests.standin_vllm import standin_model

TOO_BIG = {
    "engine": "vllm",
    "model": "Qwen/Qwen3-32B",
    "python": sys.executable,
    "vllm_version": "0.26.0",
    "plan": True,
    "gpu": "rtx3090",
    "max_model_len": 8192,
}


class CountingEngine(VllmEngine):
    """The vLLM engine, counting how often a launch is resolved."""

    def __init__(self) -> None:
        self.resolves = 0

    def resolve(self, name: str, model: VllmModel) -> VllmLaunch:
        self.resolves += 1
        return super().resolve(name, model)

    def launch_spec(self, name: str, model: VllmModel, resolved: VllmLaunch, port: int) -> LaunchSpec:
        assert isinstance(resolved, VllmLaunch)  # the record, never re-derived from the config
        return super().launch_spec(name, model, resolved, port)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))  # engine logs stay out of the shared cache
    yield


@pytest.mark.processes
def test_serve_refuses_a_plan_that_does_not_fit_with_exit_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump({"models": {"big": TOO_BIG}}))
    done = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {path}: models.big: the plan for Qwen/Qwen3-32B"), done.stderr
    assert "does not fit" in done.stderr and "Fixes, best first" in done.stderr
    assert "Traceback" not in done.stderr


def test_resolve_launches_names_the_model_of_a_missing_interpreter(tmp_path: Path) -> None:
    config = parse_config(
        {"models": {"m": {**TOO_BIG, "plan": False, "gpu": None, "python": str(tmp_path / "no-such-python")}}}
    )
    with pytest.raises(ConfigError, match=r"^t\.yaml: models\.m: vLLM python .*no-such-python does not exist"):
        resolve_launches(config.models, file="t.yaml")  # type: ignore[arg-type]


async def _wait_for(predicate: Any, what: str, limit_s: float = 60) -> None:
    """Poll until `predicate()` is true (a generous limit only so a broken run ends; nothing is timed)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.processes
async def test_a_restart_after_a_crash_reuses_the_resolved_launch(tmp_path: Path) -> None:
    env = {"STANDIN_VLLM_CRASH_AFTER_S": "0.3", "STANDIN_VLLM_CRASH_ONCE_FILE": str(tmp_path / "crashed")}
    model = parse_config({"models": {"m": standin_model(env=env, restart={"backoff_initial_s": 0.2})}}).models["m"]
    assert isinstance(model, VllmModel)
    engine = CountingEngine()
    sup = Supervisor({"m": model}, health_interval_s=0.05, engines={"vllm": engine})
    await sup.start()
    try:
        await sup.ensure_ready("m")
        await _wait_for(
            lambda: sup.status()[0]["restarts"] == 1 and sup.status()[0]["state"] == "ready",
            "the restart after the crash",
        )
    finally:
        await sup.close()
    assert engine.resolves == 1  # the first start resolved it; the restart rendered the same record


@pytest.mark.processes
async def test_a_launch_resolved_before_serving_is_not_resolved_again() -> None:
    model = parse_config({"models": {"m": standin_model()}}).models["m"]
    assert isinstance(model, VllmModel)
    engine = CountingEngine()
    launches = {"m": engine.resolve("m", model)}
    sup = Supervisor({"m": model}, health_interval_s=0.05, engines={"vllm": engine}, resolved=launches)
    await sup.start()
    try:
        upstream = await sup.ensure_ready("m")
    finally:
        await sup.close()
    assert upstream.base_url.startswith("http://127.0.0.1:")
    assert engine.resolves == 1  # only the call above
