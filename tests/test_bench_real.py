"""A short real `gpufleet bench` across the three engines serving SmolLM2-135M: embedded llama.cpp, vLLM's CPU
build and the transformers engine, through the gateway and straight to each engine (--compare-direct).

Asserts the report's structure and that every request succeeded, and that the plot is a real PNG of the
documented size; no timing is asserted (figures from this run are in docs/bench.md, measured by hand).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpufleet.bench.latest import PLOT_NAME, REPORT_NAME
from gpufleet.bench.plot import PLOT_SIZE_PX
from gpufleet.engines.vllm_install import is_installed
from tests.repo_paths import REPO
from tests.served_gateway import ServedGateway

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ENGINES = ("smollm2-llamacpp", "smollm2-vllm", "smollm2-transformers")
LEVELS = (1, 2)
REQUESTS = 2  # per target and level
MAX_TOKENS = 8


@pytest.fixture
def fleet(request: pytest.FixtureRequest) -> Iterator[ServedGateway]:
    """The session's gateway with SmolLM2 on the three engines (`vllm_gateway`, tests/conftest.py): its vLLM is
    the one tests/test_vllm_*.py use, already started; llama.cpp and transformers start on the bench's first
    request and are stopped after it (no other test uses them; their memory is not held for the rest of the run).
    Checked here first: a missing transformers engine must fail with its fix, not a startup error."""
    if not is_installed("transformers"):
        pytest.fail("the transformers engine is not installed; run 'gpufleet engines install transformers'")
    gateway: ServedGateway = request.getfixturevalue("vllm_gateway")
    yield gateway
    for name in ("smollm2-llamacpp", "smollm2-transformers"):
        httpx.post(f"{gateway.url}/admin/models/{name}/stop", timeout=60).raise_for_status()


def test_real_bench_across_llamacpp_vllm_and_transformers_through_gateway_and_direct(
    fleet: ServedGateway, tmp_path: Path
) -> None:
    out, png, cache = tmp_path / "report.json", tmp_path / "bench.png", tmp_path / "cache"
    argv = [
        sys.executable,
        "-m",
        "gpufleet.cli",
        "bench",
        *ENGINES,
        "--base-url",
        f"{fleet.url}/v1",
        "--compare-direct",
        "--concurrency",
        ",".join(map(str, LEVELS)),
        "--requests",
        str(REQUESTS),
        "--max-tokens",
        str(MAX_TOKENS),
        "--json",
        str(out),
        "--plot",
        str(png),
        "--timeout",
        "600",
    ]
    # The bench process only talks HTTP: its cache root holds just the latest report, kept out of the user's.
    env = {**os.environ, "GPUFLEET_CACHE": str(cache), "COLUMNS": "200"}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]

    report = json.loads(out.read_text())
    labels = [t["label"] for t in report["targets"]]
    assert labels == [label for engine in ENGINES for label in (engine, f"{engine} (direct)")]
    for target in report["targets"]:
        assert target["via_gateway"] is (target["direct_of"] is None)
        assert target["base_url"].endswith("/v1")
    assert report["settings"] == {
        "concurrency": list(LEVELS),
        "rates": [],
        "requests": REQUESTS,
        "max_tokens": MAX_TOKENS,
        "prompts": 6,
        "fixed_output": True,
        "seed": 0,
    }
    assert report["host"]["cpu_cores"] >= 1 and report["gpufleet"]["commit"]
    runs = {(run["target"], run["concurrency"]): run for run in report["runs"]}
    assert set(runs) == {(label, level) for label in labels for level in LEVELS}
    engines = {t["label"]: t["engine"]["name"] for t in report["targets"]}
    assert engines["smollm2-llamacpp"] == "llamacpp" and engines["smollm2-vllm"] == "vllm"
    fixed = {t["label"]: t["output_length"]["fixed"] for t in report["targets"]}
    for run in runs.values():
        assert run["errors"] == {} and run["succeeded"] == run["requests"] == REQUESTS, run
        if fixed[run["target"]] and "transformers" not in run["target"]:
            # llama.cpp and vLLM honour ignore_eos: every answer is exactly MAX_TOKENS long.
            assert run["output_tokens_per_request"] == {"min": MAX_TOKENS, "max": MAX_TOKENS}, run
        assert 0 < run["output_tokens"] <= REQUESTS * MAX_TOKENS
        assert run["req_per_s"] > 0 and run["output_tok_per_s"] > 0
        for metric in ("ttft_s", "latency_s"):
            dist = run[metric]
            assert dist["count"] == REQUESTS and 0 < dist["p50"] <= dist["p95"] <= dist["p99"]
        assert run["ttft_s"]["p99"] <= run["latency_s"]["p99"]
        assert len(run["samples"]["ttft_s"]) == REQUESTS
    overhead = report["gateway_overhead"]
    assert {(row["target"], row["concurrency"]) for row in overhead} == {(e, c) for e in ENGINES for c in LEVELS}
    assert all(row["direct"] == f"{row['target']} (direct)" for row in overhead)
    for engine in ENGINES:
        assert engine in result.stdout  # the side-by-side table

    from PIL import Image

    for path in (png, cache / "bench" / "latest" / PLOT_NAME):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.load()
            assert image.size == PLOT_SIZE_PX
    assert json.loads((cache / "bench" / "latest" / REPORT_NAME).read_text()) == report
