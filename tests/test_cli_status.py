"""`gpufleet status` against a real `gpufleet serve` subprocess, and its rendering of a recorded /status answer.

The gateway serves the STAND-IN vLLM (tests/standin_vllm, not vLLM: replays a real startup log, ~1 s), one that
fails with a CUDA OOM, a remote model on the stand-in upstream, and a remote that refuses connections.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.cli.status_cmd import render_status, status_url
from gpufleet.engine_supervisor.ports import free_port
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream
from tests.standin_vllm import standin_model

KEY = "sk-status-test"
# Wide enough that rich does not wrap the tables; the CLI must not pick up a key from the developer's shell.
ENV = {"COLUMNS": "220", "GPUFLEET_API_KEY": None, "GPUFLEET_URL": None}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    upstream = StandInUpstream().start()
    tmp = tmp_path_factory.mktemp("status-gateway")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GPUFLEET_CACHE", str(tmp / "cache"))  # the gateway subprocess inherits it: engine logs
        served = start_gateway(
            {
                "server": {"api_keys": [KEY]},
                "models": {
                    "qwen3-8b": standin_model(env={"STANDIN_VLLM_KV_USAGE": "0.913"}, preload=True, aliases=["qwen"]),
                    "qwen3-32b": standin_model(env={"STANDIN_VLLM_FAIL": "oom"}),
                    "cloud": {"engine": "remote", "url": upstream.url},
                    "offline": {"engine": "remote", "url": "http://127.0.0.1:9/v1"},
                },
            },
            tmp,
        )
    headers = {"Authorization": f"Bearer {KEY}"}
    for model in ("qwen", "qwen3-32b", "cloud", "offline", "offline", "offline"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    yield served
    stop_gateway(served)
    upstream.stop()


def run_status(*args: str) -> Any:
    return CliRunner().invoke(app, ["status", *args], env=ENV)


@pytest.mark.processes
def test_status_shows_engines_kv_cache_scraped_metrics_and_targets(gateway: ServedGateway) -> None:
    # The supervisor scrapes vLLM's /metrics every 5 s; wait for the first scrape rather than assume it happened.
    for _ in range(300):
        raw = httpx.get(f"{gateway.url}/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
        if next(m for m in raw["models"] if m["name"] == "qwen3-8b")["engine_metrics"]:
            break
        time.sleep(0.1)
    result = run_status("--url", gateway.url, "--api-key", KEY)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"gpufleet at {gateway.url}: 4 models" in out
    row = next(line for line in out.splitlines() if "qwen3-8b (qwen)" in line)
    assert "vllm" in row and "ready" in row and "46,592 (22.75x)" in row and "0/0" in row and "91.3%" in row
    failed = next(line for line in out.splitlines() if line.startswith("│ qwen3-32b"))
    assert "failed" in failed
    assert "qwen3-32b: engine exited during startup with exit code 1: cuda_oom" in out
    assert "targets" in out
    offline = next(line for line in out.splitlines() if "remote:http://127.0.0.1:9/v1" in line)
    assert "no" in offline and "s left" in offline and "cannot connect" in offline


@pytest.mark.processes
def test_json_prints_the_gateways_answer(gateway: ServedGateway) -> None:
    result = run_status("--url", f"{gateway.url}/v1", "--json", "--api-key", KEY)  # an OpenAI base URL works too
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {m["name"]: m["state"] for m in data["models"]} == {
        "qwen3-8b": "ready",
        "qwen3-32b": "failed",
        "cloud": "remote",
        "offline": "remote",
    }
    assert {t["target"] for t in data["targets"]} >= {"local:qwen3-8b", "remote:http://127.0.0.1:9/v1"}


@pytest.mark.processes
def test_key_from_the_environment_is_used(gateway: ServedGateway) -> None:
    result = CliRunner().invoke(app, ["status", "--url", gateway.url, "--json"], env={**ENV, "GPUFLEET_API_KEY": KEY})
    assert result.exit_code == 0, result.output


@pytest.mark.processes
def test_missing_key_is_named_as_the_problem(gateway: ServedGateway) -> None:
    result = run_status("--url", gateway.url)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: the gateway at {gateway.url} needs an API key (401); pass --api-key or set GPUFLEET_API_KEY"
    )


@pytest.mark.processes
def test_wrong_key_is_named_as_the_problem(gateway: ServedGateway) -> None:
    result = run_status("--url", gateway.url, "--api-key", "sk-wrong")
    assert result.exit_code == 1
    assert "rejected the API key (401)" in result.output


@pytest.mark.parametrize("extra", [[], ["--json"], ["--watch", "1"]])
def test_unreachable_gateway_is_one_line_naming_the_url(extra: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_status("--url", url, *extra)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach the gpufleet gateway at {url} ")


def test_bad_watch_interval_is_a_usage_error() -> None:
    assert run_status("--watch", "0").exit_code == 2


def test_status_url_accepts_root_or_openai_base_url() -> None:
    assert status_url("http://h:8000") == "http://h:8000/status"
    assert status_url("http://h:8000/v1/") == "http://h:8000/status"


# A /status answer recorded from a gateway serving the stand-in vLLM, then edited to show the other states a
# vLLM goes through: one still loading its weights, one asleep, one restarting after a crash.
RECORDED: dict[str, Any] = {
    "models": [
        {
            "name": "qwen3-8b",
            "engine": "vllm",
            "state": "ready",
            "phase": "ready: GPU KV cache 152,880 tokens (4.67x at 32,768 tokens per request)",
            "pid": 31807,
            "base_url": "http://127.0.0.1:38165/v1",
            "in_flight": 7,
            "uptime_s": 3605.5,
            "idle_s": 0.4,
            "idle_ttl_s": 0,
            "restarts": 0,
            "last_error": None,
            "log_path": "/var/cache/gpufleet/logs/qwen3-8b.log",
            "kv_cache": {
                "device": "GPU",
                "tokens": 152880,
                "max_concurrency": 4.67,
                "concurrency_tokens": 32768,
                "available_gib": 21.0,
            },
            "engine_metrics": {
                "requests_running": 5,
                "requests_waiting": 12,
                "kv_cache_usage": 0.913,
                "kv_cache_tokens": 152880,
                "prompt_tokens_total": 91811.0,
                "generation_tokens_total": 40012.0,
                "ttft_mean_s": 0.41,
                "sleep_state": "awake",
            },
            "aliases": ["qwen"],
        },
        {
            "name": "qwen3-32b-awq",
            "engine": "vllm",
            "state": "starting",
            "phase": "loading_weights",
            "pid": 31902,
            "base_url": None,
            "in_flight": 1,
            "uptime_s": None,
            "idle_s": 12.0,
            "idle_ttl_s": 600,
            "restarts": 0,
            "last_error": None,
            "log_path": "/var/cache/gpufleet/logs/qwen3-32b-awq.log",
            "kv_cache": None,
            "engine_metrics": None,
            "aliases": [],
            "warnings": ["plan: --enforce-eager on gb10: CUDA graph capture fails on GB10 with vLLM < 0.12"],
        },
        {
            "name": "qwen3-coder",
            "engine": "vllm",
            "state": "ready",
            "phase": "ready",
            "pid": 31950,
            "base_url": "http://127.0.0.1:40111/v1",
            "in_flight": 0,
            "uptime_s": 100.0,
            "idle_s": 95.0,
            "idle_ttl_s": 0,
            "restarts": 0,
            "last_error": None,
            "log_path": None,
            "kv_cache": {
                "device": "GPU",
                "tokens": 60000,
                "max_concurrency": None,
                "concurrency_tokens": None,
                "available_gib": None,
            },
            "engine_metrics": {
                "requests_running": 0,
                "requests_waiting": 0,
                "kv_cache_usage": 0.0,
                "kv_cache_tokens": 60000,
                "prompt_tokens_total": 0.0,
                "generation_tokens_total": 0.0,
                "ttft_mean_s": None,
                "sleep_state": "weights_offloaded",
            },
            "aliases": [],
        },
        {
            "name": "qwen3-14b",
            "engine": "vllm",
            "state": "backoff",
            "phase": "restart in 4 s",
            "pid": None,
            "base_url": None,
            "in_flight": 0,
            "uptime_s": None,
            "idle_s": 3.0,
            "idle_ttl_s": 0,
            "restarts": 2,
            "last_error": "engine crashed with exit code 1",
            "log_path": None,
            "kv_cache": None,
            "engine_metrics": None,
            "aliases": [],
        },
        {
            "name": "qwen3-32b",
            "engine": "vllm",
            "state": "failed",
            "phase": "failed",
            "pid": 31819,
            "base_url": None,
            "in_flight": 0,
            "uptime_s": None,
            "idle_s": 6.1,
            "idle_ttl_s": 0,
            "restarts": 0,
            "last_error": "engine exited during startup with exit code 1: cuda_oom: the GPU ran out of memory; lower"
            " --max-model-len or --max-num-seqs\n--- engine log (last lines) ---\n"
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.17 GiB.",
            "log_path": "/var/cache/gpufleet/logs/qwen3-32b.log",
            "kv_cache": None,
            "engine_metrics": None,
            "aliases": [],
        },
        {
            "name": "cloud",
            "engine": "remote",
            "state": "remote",
            "aliases": ["gpt-4o"],
            "base_url": "http://10.0.0.5:8000/v1",
        },
    ],
    "targets": [
        {
            "target": "local:qwen3-8b",
            "model": "qwen3-8b",
            "healthy": True,
            "cooldown_until_s": None,
            "in_flight": 7,
            "failures": 0,
            "cooldowns": 0,
            "served": 1200,
            "last_error": "",
        },
        {
            "target": "remote:http://10.0.0.5:8000/v1",
            "model": "cloud",
            "healthy": False,
            "cooldown_until_s": 23.975,
            "in_flight": 0,
            "failures": 3,
            "cooldowns": 1,
            "served": 0,
            "last_error": "cannot connect to upstream http://10.0.0.5:8000/v1/chat/completions: [Errno 111]",
        },
    ],
}


def render(data: dict[str, Any]) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(render_status(data, "http://gpu-box:8000"))
    return console.export_text()


def _row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(f"│ {name} "))


def test_recorded_vllm_status_renders_every_state() -> None:
    out = render(RECORDED)
    assert "gpufleet at http://gpu-box:8000: 6 models, 3 ready or remote" in out
    ready = _row(out, "qwen3-8b (qwen)")
    for cell in ("ready", "7", "152,880 (4.67x)", "5/12", "91.3%"):
        assert f" {cell} " in ready, cell
    assert "GPU KV cache" not in ready  # the KV numbers have their own column
    assert "starting" in _row(out, "qwen3-32b-awq") and "loading_weights" in _row(out, "qwen3-32b-awq")
    assert "ready, asleep L1" in _row(out, "qwen3-coder") and "60,000" in _row(out, "qwen3-coder")
    backoff = _row(out, "qwen3-14b")
    assert "backoff" in backoff and "restart in 4 s" in backoff and " 2 " in backoff
    assert "remote" in _row(out, "cloud (gpt-4o)")
    assert "qwen3-32b: engine exited during startup with exit code 1: cuda_oom" in out
    assert "torch.OutOfMemoryError: CUDA out of memory" in out  # the log tail under the error
    assert "qwen3-32b-awq: plan: --enforce-eager on gb10" in out.split("warnings", 1)[1]
    cooled = next(line for line in out.splitlines() if "remote:http://10.0.0.5:8000/v1" in line)
    assert " no " in cooled and "24.0 s left" in cooled and " 3 " in cooled


def test_status_without_targets_shows_no_targets_table() -> None:
    out = render({"models": RECORDED["models"][:1]})
    assert "targets" not in out and "last errors" not in out
