"""Concurrent admin start/stop on one model (issue 20 §4): transitions are serialised per model.

Against a real `gpufleet serve` whose engines are the STAND-IN vLLM (tests/standin_vllm, not vLLM): a burst
of POST /admin/models/M/start and /stop at once, then the gateway's engine child processes must be exactly
those /status shows (no orphan holding memory and a port), and a swap group never has two members up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_vllm import standin_model

pytestmark = pytest.mark.slow

SETTLE_S = 60  # the burst's last transition on the shared 2-core machine; never a timing assertion


def engine_children(gateway_pid: int) -> set[int]:
    """Live (non-zombie) child processes of the gateway that run an engine (the stand-in vLLM)."""
    children: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == gateway_pid and b"vllm.entrypoints" in cmdline:
            children.add(int(proc.name))
    return children


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    tmp = tmp_path_factory.mktemp("burst")
    config = {
        "models": {
            "solo": standin_model(),
            "a": standin_model(swap_group="gpu0"),
            "b": standin_model(swap_group="gpu0"),
        },
        "swap_groups": {"gpu0": {}},
        "server": {"queue_timeout_s": 60},
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GPUFLEET_CACHE", str(tmp / "cache"))  # engine logs out of the shared cache
        served = start_gateway(config, tmp)
    yield served
    stop_gateway(served)


async def burst(gateway: ServedGateway, calls: list[tuple[str, str]]) -> list[int]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
        answers = await asyncio.gather(*(http.post(f"/admin/models/{model}/{verb}") for model, verb in calls))
    return [a.status_code for a in answers]


def settled_status(gateway: ServedGateway) -> list[dict[str, object]]:
    deadline = time.monotonic() + SETTLE_S
    while True:
        models = httpx.get(f"{gateway.url}/status", timeout=10).json()["models"]
        if all(m["state"] not in ("starting", "stopping") for m in models) or time.monotonic() > deadline:
            return list(models)
        time.sleep(0.2)


def assert_children_match_status(gateway: ServedGateway) -> list[dict[str, object]]:
    models = settled_status(gateway)
    shown = {int(str(m["pid"])) for m in models if m["pid"] is not None}
    assert engine_children(gateway.process.pid) == shown, models
    return models


@pytest.mark.parametrize("rounds", [3])
def test_start_stop_burst_leaves_no_engine_unknown_to_status(gateway: ServedGateway, rounds: int) -> None:
    for _ in range(rounds):
        calls = [("solo", "start"), ("solo", "stop")] * 10
        codes = asyncio.run(burst(gateway, calls))
        assert set(codes) <= {200, 503}, codes  # a start cut short by a stop answers 503 + Retry-After
        assert_children_match_status(gateway)
    asyncio.run(burst(gateway, [("solo", "stop")]))
    models = assert_children_match_status(gateway)
    assert next(m for m in models if m["name"] == "solo")["state"] == "stopped"
    assert engine_children(gateway.process.pid) == set()


def test_start_burst_spawns_one_engine(gateway: ServedGateway) -> None:
    codes = asyncio.run(burst(gateway, [("solo", "start")] * 20))
    assert codes == [200] * 20
    models = assert_children_match_status(gateway)
    assert len(engine_children(gateway.process.pid)) == 1
    assert next(m for m in models if m["name"] == "solo")["state"] == "ready"
    asyncio.run(burst(gateway, [("solo", "stop")]))


def test_swap_group_burst_never_has_two_members_up(gateway: ServedGateway) -> None:
    calls = [(model, verb) for model in ("a", "b") for verb in ("start", "stop", "start")] * 4
    codes = asyncio.run(burst(gateway, calls))
    assert set(codes) <= {200, 503}, codes
    models = assert_children_match_status(gateway)
    up = [m["name"] for m in models if m["name"] in ("a", "b") and m["pid"] is not None]
    assert len(up) <= 1, models
    asyncio.run(burst(gateway, [("a", "stop"), ("b", "stop")]))
    assert_children_match_status(gateway)
