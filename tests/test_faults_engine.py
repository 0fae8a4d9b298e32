"""Failure classification against the real embedded engine (SmolLM2 from PyPI) behind a real `gpufleet serve`.

- an engine killed under the gateway is "not ready" (503 + Retry-After), not a bad gateway (502);
- embeddings on an engine started without them are a 501-class answer, and not the target's fault.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    # queue_timeout_s 0: a request for an engine that is not ready is answered at once, never held.
    config = {"models": {"smol": smollm2_model(parallel=2, context=2048)}, "server": {"queue_timeout_s": 0}}
    served = start_gateway(config, tmp_path_factory.mktemp("faults-engine"))
    yield served
    stop_gateway(served)


def target_of(gateway: ServedGateway) -> dict[str, object]:
    targets = httpx.get(f"{gateway.url}/status", timeout=10).json()["targets"]
    return dict(next(t for t in targets if t["model"] == "smol"))


def test_embeddings_on_an_engine_without_them_is_501_not_a_target_failure(gateway: ServedGateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": "smol", "input": "hi"}, timeout=60)
    assert response.status_code == 501, response.text
    assert response.json()["error"]["message"]
    target = target_of(gateway)
    assert target["failures"] == 0 and target["healthy"] is True


def test_killed_engine_answers_503_with_retry_after_not_502(gateway: ServedGateway) -> None:
    pid = int(str(gateway.status("smol")["pid"]))
    os.kill(pid, signal.SIGKILL)
    body = {"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    # Whether or not the supervisor noticed the crash yet, the engine is not ready: 503, come back later.
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "engine_not_ready"
