"""Fixtures only: a test store for the run, an in-process gateway (`gw`), a real `gpufleet serve` (`smol_gateway`).

The helpers they use live in modules named for what they are: tests/gateway_harness.py (in-process app,
uvicorn on loopback), tests/served_gateway.py (a `gpufleet serve` subprocess), tests/real_engines.py (the real
engines' configs and checks), tests/repo_paths.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.gateway_harness import OpenGateway, open_gateways
from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

# Team keys and the usage ledger of every test gateway (subprocesses inherit it) go to a SQLite file of this run,
# never the developer's own store: a key made there with `gpufleet keys create` would lock every test gateway.
_TEST_STORE_DIR = tempfile.mkdtemp(prefix="gpufleet-test-store-")
os.environ["GPUFLEET_STORE"] = str(Path(_TEST_STORE_DIR) / "gpufleet.sqlite3")
atexit.register(shutil.rmtree, _TEST_STORE_DIR, True)  # one per run, not left behind in /tmp


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


@pytest.fixture
async def gw() -> AsyncIterator[OpenGateway]:
    """`await gw(config)` → an httpx client of a running in-process gateway (closed after the test)."""
    async with open_gateways() as make:
        yield make
