"""Replicas served by two REAL embedded engines (SmolLM2 on llama.cpp) behind one route.

The fault-injection cases (refuse, hang, 500, 429, die mid-stream) use stand-in upstreams in test_router.py;
here the targets are real engine processes that gpufleet supervises.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    config = {
        "models": {
            "smol-a": smollm2_model(parallel=4, context=2048, threads=1, listed=False),
            "smol-b": smollm2_model(parallel=4, context=2048, threads=1, listed=False),
        },
        "routes": {"smol": {"targets": ["smol-a", "smol-b"], "aliases": ["tiny"]}},
        # A dead replica must not hold requests back while the supervisor restarts it: fall over at once.
        "server": {"queue_timeout_s": 0},
        "router": {"cooldown_s": 2, "retry_backoff_s": 0},
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("router-engines"))
    yield gateway
    stop_gateway(gateway)


def ask(user: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Count to five."}],
        "max_tokens": 24,
        "temperature": 0,
    }
    if user:
        body["user"] = user
    return body


async def test_concurrent_requests_spread_over_both_engines(replicas: ServedGateway) -> None:
    async with httpx.AsyncClient(base_url=replicas.url, timeout=120) as http:
        bodies = [{**ask(), "stream": True} for _ in range(8)]
        responses = await asyncio.gather(*(http.post("/v1/chat/completions", json=b) for b in bodies))
    assert all(r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]") for r in responses)
    served = [r.headers["x-gpufleet-model"] for r in responses]
    assert served.count("smol-a") >= 3 and served.count("smol-b") >= 3, served


def test_a_session_stays_on_one_engine(replicas: ServedGateway) -> None:
    served = {
        httpx.post(f"{replicas.url}/v1/chat/completions", json=ask("alice"), timeout=120).headers["x-gpufleet-model"]
        for _ in range(3)
    }
    assert len(served) == 1


def test_killed_engine_is_skipped_while_it_restarts(replicas: ServedGateway) -> None:
    home = httpx.post(f"{replicas.url}/v1/chat/completions", json=ask("bob"), timeout=120).headers["x-gpufleet-model"]
    other = "smol-b" if home == "smol-a" else "smol-a"
    pid = replicas.status(home)["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while replicas.status(home)["state"] == "ready" and time.monotonic() < deadline:
        time.sleep(0.05)
    response = httpx.post(f"{replicas.url}/v1/chat/completions", json=ask("bob"), timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-model"] == other  # bob's engine is down: the other replica answers
    assert response.json()["choices"][0]["message"]["content"]
    # The supervisor brings the killed engine back; bob returns to it (his prefix cache lives there).
    deadline = time.monotonic() + 90
    while replicas.status(home)["state"] != "ready" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replicas.status(home)["state"] == "ready"
    time.sleep(2.1)  # the cooldown
    back = httpx.post(f"{replicas.url}/v1/chat/completions", json=ask("bob"), timeout=120)
    assert back.headers["x-gpufleet-model"] == home


def test_listing_hides_replicas_and_shows_the_route(replicas: ServedGateway, tmp_path: Path) -> None:
    ids = {m["id"] for m in httpx.get(f"{replicas.url}/v1/models", timeout=10).json()["data"]}
    assert ids == {"smol", "tiny"}
