"""Engines answer only the gateway (issue 20 §4): each start gets a random API key, passed in the engine's
environment (never its argv) and sent by the gateway as Bearer; a local user who finds the loopback port
gets 401. Against a real `gpufleet serve` with the real embedded SmolLM2 engine (llama.cpp)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.slow
CHAT = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Say hi"}],
    "max_tokens": 4,
    "temperature": 0,
    "seed": 1,
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    served = start_gateway(
        {"models": {"smollm2": smollm2_model(parallel=2, context=2048)}, "server": {"queue_timeout_s": 120}},
        tmp_path_factory.mktemp("engine-keys"),
    )
    yield served
    stop_gateway(served)


def engine_of(gateway: ServedGateway) -> dict[str, object]:
    return gateway.status("smollm2")


def test_engine_port_refuses_requests_without_the_key(gateway: ServedGateway) -> None:
    engine = engine_of(gateway)
    base = str(engine["base_url"])
    assert base.startswith("http://127.0.0.1:")
    anonymous = httpx.post(f"{base}/chat/completions", json=CHAT, timeout=60)
    assert anonymous.status_code == 401
    wrong = httpx.post(f"{base}/chat/completions", json=CHAT, headers={"authorization": "Bearer guess"}, timeout=60)
    assert wrong.status_code == 401
    through = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=120)
    assert through.status_code == 200 and through.json()["choices"][0]["message"]["content"] is not None


def test_key_is_in_no_argv_no_status_and_new_on_every_start(gateway: ServedGateway) -> None:
    started = httpx.post(f"{gateway.url}/admin/models/smollm2/start", timeout=120).json()
    key = started["engine_api_key"]
    assert isinstance(key, str) and len(key) >= 32
    pid = int(str(engine_of(gateway)["pid"]))
    assert key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert key not in httpx.get(f"{gateway.url}/status", timeout=10).text
    assert key not in gateway.log()
    # The admin (who may start and stop it anyway) can reach the engine directly, e.g. for bench --compare-direct.
    direct = httpx.post(
        f"{started['engine_url']}/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}, timeout=120
    )
    assert direct.status_code == 200
    httpx.post(f"{gateway.url}/admin/models/smollm2/stop", timeout=60).raise_for_status()
    again = httpx.post(f"{gateway.url}/admin/models/smollm2/start", timeout=120).json()
    assert again["engine_api_key"] != key
