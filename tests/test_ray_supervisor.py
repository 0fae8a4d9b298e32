"""The supervisor with a multi-node model whose head is not this host: refused before any process starts, with the
reason in the 503 and in /status, and not retried (a restart cannot make this host the head). The working path —
a real Ray head and worker — is tests/test_ray_netns.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.config import VllmModel, parse_config
from gpufleet.errors import EngineError
from gpufleet.supervisor import Supervisor


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    yield


async def test_a_head_elsewhere_fails_the_model_without_retry_and_starts_nothing() -> None:
    # 192.0.2.0/24 is TEST-NET-1: no address of this machine; checking it binds a socket and sends nothing.
    config = parse_config({"models": {"big": {
        "engine": "vllm", "model": "/models/big", "python": sys.executable, "nodes": ["192.0.2.10", "192.0.2.11"],
        "gpus_per_node": 1, "tensor_parallel_size": 2}}})
    model = config.models["big"]
    assert isinstance(model, VllmModel)
    sup = Supervisor({"big": model}, health_interval_s=0.05)
    await sup.start()
    try:
        with pytest.raises(EngineError, match=r"the head 192\.0\.2\.10 .* is not an address of this host"):
            await sup.ensure_ready("big", wait_s=30)
        [status] = sup.status()
        assert status["state"] == "failed" and status["restarts"] == 0 and status["pid"] is None
        assert "run gpufleet serve on the head" in status["last_error"]
        assert status["ray"]["head_pid"] is None and status["ray"]["head"] == "192.0.2.10:6379"
    finally:
        await sup.close()
