"""The supervisor's vLLM state machine, driven by the STAND-IN vLLM in tests/standin_vllm (not vLLM).

gpufleet launches the stand-in with the argv it builds for real vLLM (`<python> -m vllm.entrypoints.openai.api_server
...`); the stand-in replays the recorded real startup log and answers like vLLM 0.32. Real vLLM is tested in
test_vllm_gateway.py (~50 s per start); these take about a second each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpufleet.config import VllmModel, parse_config
from gpufleet.engine_supervisor import Supervisor
from gpufleet.errors import EngineError
from gpufleet.gateway import build_app, running
from tests.served_gateway import pid_alive
from tests.standin_vllm import standin_model

pytestmark = pytest.mark.processes  # runs child processes: seconds each (make test-fast leaves them out)


def vllm_config(**model: Any) -> VllmModel:
    parsed = parse_config({"models": {"m": standin_model(**model)}}).models["m"]
    assert isinstance(parsed, VllmModel)
    return parsed


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Engine logs go under the cache root; keep them out of the shared one.
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    yield


class Events:
    """Collects the supervisor's progress messages."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, name: str, message: str) -> None:
        self.messages.append(message)

    def index(self, fragment: str, start: int = 0) -> int:
        return next(i for i, m in enumerate(self.messages) if i >= start and fragment in m)


@pytest.fixture
async def supervised() -> AsyncIterator[Any]:
    started: list[Supervisor] = []

    async def make(events: Events | None = None, **model: Any) -> Supervisor:
        sup = Supervisor({"m": vllm_config(**model)}, health_interval_s=0.05, on_event=events)
        await sup.start()
        started.append(sup)
        return sup

    yield make
    for sup in started:
        await sup.close()


async def wait_for(predicate: Any, what: str, limit_s: float = 60) -> None:
    """Poll until `predicate()` is true (a generous limit only so a broken run ends; nothing is timed)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def test_startup_goes_through_the_phases_and_ends_ready_with_kv_capacity(supervised: Any) -> None:
    events = Events()
    sup = await supervised(events)
    upstream = await sup.ensure_ready("m")
    assert upstream.base_url.startswith("http://127.0.0.1:")
    loading = events.index("loading_weights")
    profiling = events.index("profiling", loading)
    kv = events.index("kv_cache_allocated: CPU KV cache 46,592 tokens (22.75x at 2,048 tokens per request)", profiling)
    assert events.index("ready in", kv) > kv
    status = sup.status()[0]
    assert status["state"] == "ready"
    assert status["kv_cache"]["tokens"] == 46_592 and status["kv_cache"]["max_concurrency"] == 22.75
    assert "46,592 tokens" in status["phase"]


async def test_cuda_oom_fails_without_retry_and_names_the_cause(supervised: Any) -> None:
    sup = await supervised(env={"STANDIN_VLLM_FAIL": "oom"})
    with pytest.raises(EngineError) as caught:
        await sup.ensure_ready("m")
    assert "cuda_oom" in str(caught.value) and "CUDA out of memory" in caught.value.log_tail
    status = sup.status()[0]
    assert status["state"] == "failed" and status["restarts"] == 0
    assert "cuda_oom" in status["last_error"] and "lower --max-model-len" in status["last_error"]
    # The engine is gone: /status must not show a pid that may now belong to another process.
    assert status["pid"] is None and status["exit_code"] not in (None, 0)


async def test_v0_kv_cache_message_names_the_largest_context_that_fits(supervised: Any) -> None:
    sup = await supervised(env={"STANDIN_VLLM_FAIL": "kv-too-small-v0", "STANDIN_VLLM_KV_TOKENS": "1500"})
    with pytest.raises(EngineError, match="kv_cache_too_small"):
        await sup.ensure_ready("m")
    assert "set --max-model-len to at most 1500" in sup.status()[0]["last_error"]


async def test_removed_flag_is_refused_before_launch_with_the_replacement_named(supervised: Any) -> None:
    # The stand-in carries vllm/_version.py (0.32.0), so gpufleet knows the version and checks the argv
    # before starting anything (the stand-in would also fail like vLLM's argparse: exit 2).
    sup = await supervised(extra_args=["--swap-space", "16"])
    with pytest.raises(EngineError, match=r"vLLM 0\.32\.0") as caught:
        await sup.ensure_ready("m")
    assert "--swap-space" in str(caught.value) and "--kv-offloading-size" in str(caught.value)


async def test_flag_warnings_are_shown_in_status_not_only_logged(supervised: Any) -> None:
    # Seed 001's VLLM_USE_V1=0 is not read by vLLM >= 0.11: the engine still starts, and /status says why
    # the setting has no effect.
    sup = await supervised(env={"VLLM_USE_V1": "0"})
    await sup.ensure_ready("m")
    status = sup.status()[0]
    assert status["state"] == "ready"
    assert any("VLLM_USE_V1 is not read since vLLM 0.11" in w for w in status["warnings"]), status["warnings"]


async def test_crash_restarts_with_backoff_and_serves_again(supervised: Any, tmp_path: Path) -> None:
    events = Events()
    env = {"STANDIN_VLLM_CRASH_AFTER_S": "0.3", "STANDIN_VLLM_CRASH_ONCE_FILE": str(tmp_path / "crashed")}
    sup = await supervised(events, env=env, restart={"backoff_initial_s": 0.2})
    await sup.ensure_ready("m")
    first_pid = sup.status()[0]["pid"]
    await wait_for(
        lambda: sup.status()[0]["restarts"] == 1 and sup.status()[0]["state"] == "ready", "the restart after the crash"
    )
    crash = events.index("crashed with exit code 1; restarting in 0.2 s (attempt 1)")
    assert events.index("ready in", crash) > crash
    status = sup.status()[0]
    assert status["pid"] != first_pid and not pid_alive(first_pid)
    upstream = await sup.ensure_ready("m")
    async with httpx.AsyncClient() as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "still there?"}]}
        reply = (await http.post(f"{upstream.base_url}/chat/completions", json=body)).json()
    assert reply["choices"][0]["message"]["content"] == "echo: still there?"


async def test_a_crashed_engines_leftover_workers_are_killed(supervised: Any, tmp_path: Path) -> None:
    """vLLM's EngineCore/TP workers live in the server's process group; when the server dies abruptly they would
    keep the GPU memory the restart needs."""
    worker_file = tmp_path / "worker.pid"
    env = {
        "STANDIN_VLLM_CRASH_AFTER_S": "0.3",
        "STANDIN_VLLM_CRASH_ONCE_FILE": str(tmp_path / "crashed"),
        "STANDIN_VLLM_WORKER_PID_FILE": str(worker_file),
    }
    sup = await supervised(env=env, restart={"backoff_initial_s": 0.2})
    await sup.ensure_ready("m")
    worker = int(worker_file.read_text())
    assert pid_alive(worker)
    await wait_for(
        lambda: sup.status()[0]["restarts"] == 1 and sup.status()[0]["state"] == "ready", "the restart after the crash"
    )
    await wait_for(lambda: not pid_alive(worker), "the crashed server's worker to be killed", limit_s=10)
    assert pid_alive(int(worker_file.read_text()))  # the restarted server's own worker runs


async def test_hang_hits_the_ready_timeout_with_the_log_tail_and_is_stopped(supervised: Any) -> None:
    sup = await supervised(env={"STANDIN_VLLM_HANG": "1"}, ready_timeout_s=3)
    with pytest.raises(EngineError, match="did not become ready within 3 s") as caught:
        await sup.ensure_ready("m")
    assert "Loading weights took" in caught.value.log_tail
    pid = sup.slots["m"].process.pid
    await wait_for(lambda: not pid_alive(pid), "the hung engine to be stopped")
    assert sup.status()[0]["state"] == "failed"


def _chat(model: str, content: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


async def test_gateway_answers_503_with_the_oom_cause() -> None:
    config = parse_config({"models": {"big": standin_model(env={"STANDIN_VLLM_FAIL": "oom"})}})
    app = build_app(config)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        response = await http.post("/v1/chat/completions", json=_chat("big"), timeout=60)
        status = (await http.get("/status")).json()["models"][0]
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "cuda_oom" in message and "'gpufleet status'" in message
    assert "CUDA out of memory" not in message  # the engine's log is for the operator (issue 12)
    assert status["state"] == "failed" and "cuda_oom" in status["last_error"]
    assert "CUDA out of memory" in status["last_error"]


async def test_gateway_relays_and_exports_scraped_vllm_metrics_with_the_model_label() -> None:
    model = standin_model(env={"STANDIN_VLLM_KV_USAGE": "0.91"}, aliases=["qwen"])
    app = build_app(parse_config({"models": {"qwen3-8b": model}}))
    async with (
        running(app) as gateway,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        reply = await http.post("/v1/chat/completions", json=_chat("qwen", "ping pong"), timeout=60)
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == "echo: ping pong"
        await gateway.supervisor.scrape("qwen3-8b")
        text = (await http.get("/metrics")).text
        status = (await http.get("/status")).json()["models"][0]
    assert 'gpufleet_engine_kv_cache_usage_ratio{model="qwen3-8b"} 0.91' in text
    assert 'gpufleet_engine_requests_waiting{model="qwen3-8b"} 0.0' in text
    assert 'gpufleet_engine_kv_cache_tokens{model="qwen3-8b"} 46592.0' in text
    assert 'gpufleet_engine_up{model="qwen3-8b",state="ready"} 1.0' in text
    scraped = status["engine_metrics"]
    assert scraped["kv_cache_usage"] == 0.91 and scraped["kv_cache_tokens"] == 46_592
    assert scraped["prompt_tokens_total"] == 2 and scraped["sleep_state"] == "awake"


async def test_standin_sleep_endpoints_answer_like_vllm_0_32(supervised: Any) -> None:
    # The sleep/wake work in the supervisor relies on these shapes (vllm/entrypoints/serve/dev/sleep/api_router.py).
    sup = await supervised(enable_sleep_mode=True)
    upstream = await sup.ensure_ready("m")
    root = upstream.base_url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root, timeout=30) as http:
        assert (await http.get("/is_sleeping")).json() == {"is_sleeping": False}
        assert (await http.post("/sleep", params={"level": 3})).status_code == 422
        assert (await http.post("/sleep", params={"level": 1})).json() == {"status": "sleeping", "level": 1}
        assert (await http.get("/is_sleeping")).json() == {"is_sleeping": True}
        assert (await sup.scrape("m")).sleep_state == "weights_offloaded"
        held = asyncio.create_task(http.post("/v1/chat/completions", json=_chat("m", "after wake")))
        for _ in range(600):  # until vLLM counts it as waiting (or it wrongly got through)
            metrics = await sup.scrape("m")
            if held.done() or (metrics is not None and metrics.requests_waiting == 1):
                break
            await asyncio.sleep(0.05)
        assert not held.done(), "a request sent while asleep must wait for /wake_up"
        woke = await http.post("/wake_up", params=[("tags", "weights")])
        assert woke.json() == {"status": "sleeping", "tags": ["weights"]}
        assert not held.done()
        assert (await http.post("/wake_up")).json() == {"status": "awake", "tags": None}
        reply = await held
        assert reply.json()["choices"][0]["message"]["content"] == "echo: after wake"
        assert (await http.get("/is_sleeping")).json() == {"is_sleeping": False}


async def test_sleep_routes_exist_only_in_dev_mode(supervised: Any) -> None:
    sup = await supervised()  # no enable_sleep_mode: gpufleet sets no VLLM_SERVER_DEV_MODE
    upstream = await sup.ensure_ready("m")
    async with httpx.AsyncClient(base_url=upstream.base_url.removesuffix("/v1")) as http:
        assert (await http.post("/sleep", params={"level": 1})).status_code == 404
        assert (await http.get("/is_sleeping")).status_code == 404


async def test_flag_the_checks_do_not_know_fails_with_vllms_own_words(supervised: Any) -> None:
    sup = await supervised(extra_args=["--no-such-flag"])
    with pytest.raises(EngineError) as caught:
        await sup.ensure_ready("m")
    assert "--no-such-flag" in str(caught.value)
