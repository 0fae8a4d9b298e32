"""The supervisor with a multi-node model whose head is not this host: refused before any process starts, with the
reason in the 503 and in /status, and not retried (a restart cannot make this host the head). The working path —
a real Ray head and worker — is tests/test_ray_netns.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpufleet.config import VllmModel, parse_config
from gpufleet.engine_supervisor import Supervisor
from gpufleet.engine_supervisor.cluster_hook import ClusterHook
from gpufleet.engine_supervisor.lifecycle import EngineLifecycle
from gpufleet.engine_supervisor.process import EngineProcess
from gpufleet.engine_supervisor.slot import EngineSlot, EngineState
from gpufleet.engines.base import LaunchSpec
from gpufleet.errors import EngineError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    yield


async def test_a_head_elsewhere_fails_the_model_without_retry_and_starts_nothing() -> None:
    # 198.51.100.0/24 is TEST-NET-2: no address of this machine; checking it binds a socket and sends nothing.
    config = parse_config(
        {
            "models": {
                "big": {
                    "engine": "vllm",
                    "model": "/models/big",
                    "python": sys.executable,
                    "nodes": ["198.51.100.10", "198.51.100.11"],
                    "gpus_per_node": 1,
                    "tensor_parallel_size": 2,
                }
            }
        }
    )
    model = config.models["big"]
    assert isinstance(model, VllmModel)
    sup = Supervisor({"big": model}, health_interval_s=0.05)
    await sup.start()
    try:
        with pytest.raises(EngineError, match=r"the head 198\.51\.100\.10 .* is not an address of this host"):
            await sup.ensure_ready("big", wait_s=30)
        [status] = sup.status()
        assert status["state"] == "failed" and status["restarts"] == 0 and status["pid"] is None
        assert "run gpufleet serve on the head" in status["last_error"]
        assert status["ray"]["head_pid"] is None and status["ray"]["head"] == "198.51.100.10:6379"
    finally:
        await sup.close()


class _HeadReportingALoss:
    """Stands in for RayHead.watch only: the state API reports the worker gone at the first poll."""

    async def watch(self, http: object, on_lost: Callable[[str], None], interval_s: float) -> None:
        on_lost("ray worker 198.51.100.11 lost (Unexpected termination: health check failed)")


async def test_when_vllm_exits_before_the_watch_sees_the_loss_the_lost_node_is_still_the_reason(tmp_path: Path) -> None:
    model = parse_config(
        {
            "models": {
                "big": {
                    "engine": "vllm",
                    "model": "/m",
                    "nodes": ["198.51.100.10", "198.51.100.11"],
                    "tensor_parallel_size": 2,
                }
            }
        }
    ).models["big"]
    assert isinstance(model, VllmModel)
    hook = ClusterHook({"big": model})
    hook.heads["big"] = _HeadReportingALoss()  # type: ignore[assignment]
    life = EngineLifecycle({}, health_interval_s=0.1, on_event=None, on_freed=lambda slot: None)
    life.http = object()  # type: ignore[assignment]
    process = EngineProcess(
        LaunchSpec(argv=[sys.executable, "-c", "raise SystemExit(1)"], env={}, port=1, base_url="", health_url=""),
        tmp_path / "engine.log",
    )
    await process.spawn()
    await process.wait()
    slot = EngineSlot("big", model)
    slot.process, slot.state, slot.last_error = process, EngineState.BACKOFF, "engine crashed with exit code 1"
    hook.watch(life, slot, process)
    await asyncio.sleep(0.1)
    assert slot.last_error == (
        "ray worker 198.51.100.11 lost (Unexpected termination: health check failed); the engine exited with code 1"
    )
