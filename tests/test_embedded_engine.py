"""The real embedded engine (llama.cpp via xllamacpp, SmolLM2 from PyPI) behind a real `gpufleet serve`.

Driven with the official `openai` client, as a user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, pid_alive, start_gateway, stop_gateway

pytestmark = pytest.mark.slow


def client(gw: ServedGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=120)


def engine_metric(gw: ServedGateway, model: str, name: str) -> float:
    # The engine answers only its per-start key (llama.cpp guards /metrics too); an admin start hands it out.
    started = httpx.post(f"{gw.url}/admin/models/{model}/start", timeout=120).json()
    base = str(started["engine_url"]).removesuffix("/v1")
    headers = {"authorization": f"Bearer {started['engine_api_key']}"}
    for line in httpx.get(f"{base}/metrics", headers=headers, timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the engine's metrics")


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_chat_completion_with_openai_client(smol_gateway: ServedGateway) -> None:
    reply = client(smol_gateway).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
        seed=7,
    )
    assert reply.model == "smollm2"
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_alias_serves_the_same_model(smol_gateway: ServedGateway) -> None:
    reply = client(smol_gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, seed=7
    )
    assert reply.model == "smollm2"


def test_streamed_chat_arrives_in_several_chunks(smol_gateway: ServedGateway) -> None:
    # ignore_eos (llama.cpp) makes the engine produce all 24 tokens: a greedy answer may also end after two
    # ("1." then EOS), which made this test fail one run in three (issue 12).
    stream = client(smol_gateway).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Count to five."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
        seed=7,
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24


def test_text_completion(smol_gateway: ServedGateway) -> None:
    reply = client(smol_gateway).completions.create(
        model="smollm2", prompt="Once upon a time", max_tokens=8, temperature=0, seed=7, extra_body={"ignore_eos": True}
    )
    assert reply.model == "smollm2"
    assert reply.choices[0].text


def test_models_endpoint_lists_configured_names(smol_gateway: ServedGateway) -> None:
    ids = {m.id for m in client(smol_gateway).models.list()}
    assert {"smollm2", "tiny", "gpt-4o", "smollm2-ttl"} <= ids


def test_sixteen_concurrent_streams_all_complete(smol_gateway: ServedGateway) -> None:
    async def one(aclient: openai.AsyncOpenAI, i: int) -> str:
        stream = await aclient.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": f"Say the number {i}."}],
            max_tokens=12,
            stream=True,
            temperature=0,
            seed=7,
            extra_body={"ignore_eos": True},
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    async def main() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{smol_gateway.url}/v1", api_key="x", max_retries=0, timeout=120)
        async with aclient:
            return await asyncio.gather(*(one(aclient, i) for i in range(16)))

    results = asyncio.run(main())
    assert len(results) == 16
    assert all(text.strip() for text in results)


def test_client_disconnect_cancels_the_generation(smol_gateway: ServedGateway) -> None:
    decoded_before = engine_metric(smol_gateway, "smollm2", "llamacpp:n_decode_total")
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "max_tokens": 900,
        "ignore_eos": True,
        "stream": True,
        "temperature": 0,
        "seed": 7,
    }
    with httpx.stream("POST", f"{smol_gateway.url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    # The engine must stop generating for the vanished client instead of finishing 900 tokens.
    wait_for(
        lambda: engine_metric(smol_gateway, "smollm2", "llamacpp:requests_processing") == 0,
        60,
        "the engine to stop processing",
    )
    decoded = engine_metric(smol_gateway, "smollm2", "llamacpp:n_decode_total") - decoded_before
    assert decoded < 900


def test_crashed_engine_is_restarted_and_serves_again(smol_gateway: ServedGateway) -> None:
    before = smol_gateway.status("smollm2")
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    wait_for(lambda: smol_gateway.status("smollm2")["restarts"] == int(str(before["restarts"])) + 1, 60, "a restart")
    reply = client(smol_gateway).chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, seed=7
    )
    assert reply.choices[0].message.content is not None
    after = smol_gateway.status("smollm2")
    assert after["state"] == "ready" and after["pid"] != before["pid"]
    assert "crashed" in smol_gateway.log()


def test_idle_model_is_unloaded_then_reloaded_on_next_request(smol_gateway: ServedGateway) -> None:
    ask: Any = {
        "model": "smollm2-ttl",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
        "temperature": 0,
        "seed": 7,
    }
    client(smol_gateway).chat.completions.create(**ask)
    first_pid = smol_gateway.status("smollm2-ttl")["pid"]
    wait_for(lambda: smol_gateway.status("smollm2-ttl")["state"] == "stopped", 60, "the idle unload")
    assert not pid_alive(int(str(first_pid)))
    client(smol_gateway).chat.completions.create(**ask)
    status = smol_gateway.status("smollm2-ttl")
    assert status["state"] == "ready" and status["pid"] != first_pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_gateway_shutdown_leaves_no_engine_process(tmp_path: Path, sig: int) -> None:
    gateway = start_gateway({"models": {"smollm2": smollm2_model(parallel=2)}}, tmp_path)
    pid = int(str(gateway.status("smollm2")["pid"]))
    assert pid_alive(pid)
    stop_gateway(gateway, sig)
    wait_for(lambda: not pid_alive(pid), 30, f"engine pid {pid} to exit after the gateway got signal {sig}")


async def test_crash_looping_engine_ends_failed_with_its_log_in_status_not_in_the_503() -> None:
    config = parse_config(
        {
            "models": {
                "broken": smollm2_model(
                    preload=False,
                    extra_args={"no_such_param": 1},
                    restart={"max_restarts": 1, "backoff_initial_s": 0.1, "backoff_max_s": 0.2},
                )
            }
        }
    )
    app = build_app(config)
    async with (
        running(app) as gateway,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        body = {"model": "broken", "messages": [{"role": "user", "content": "hi"}]}
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 503
        assert "retry-after" in response.headers
        message = response.json()["error"]["message"]
        assert "exited during startup" in message and "'gpufleet status'" in message
        # The engine's log (paths, tracebacks) is for the operator: /status, not the client (issue 12).
        assert "no_such_param" not in message and "engine log (last lines)" not in message
        status = (await http.get("/status")).json()["models"][0]
        assert status["state"] == "failed"
        assert "unknown parameter 'no_such_param'" in status["last_error"]
        assert gateway.supervisor.status()[0]["state"] == "failed"


async def test_start_timeout_reports_the_fix_and_keeps_the_log_in_status() -> None:
    config = parse_config({"models": {"slow": smollm2_model(preload=False, ready_timeout_s=0.05)}})
    app = build_app(config)
    async with (
        running(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http,
    ):
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
        response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "did not become ready within" in message
        assert "ready_timeout_s" in message
        assert "engine log (last lines)" not in message
        status = (await http.get("/status")).json()["models"][0]
        assert "did not become ready" in status["last_error"] and status["log_path"]


def test_a_burst_of_signals_still_stops_the_engine(tmp_path: Path) -> None:
    """The engine's signal handler takes no lock: a second SIGTERM landing inside the first handler (a SIGKILLed
    gateway's engine gets PR_SET_PDEATHSIG's and the process group's) once deadlocked it, an orphan for hours."""
    from gpufleet.engine_supervisor.ports import free_port
    from gpufleet.model_packages import PACKAGED_MODELS, prepare

    gguf = prepare(PACKAGED_MODELS["smollm2-135m-instruct"])
    argv = [sys.executable, "-m", "gpufleet.engines.llamacpp_server", "--model", str(gguf), "--port", str(free_port())]
    with (tmp_path / "engine.log").open("wb") as log:
        engine = subprocess.Popen([*argv, "--threads", "1", "--parallel", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b"serving" in (tmp_path / "engine.log").read_bytes(), 60, "the engine to serve")
        # Signals keep coming while it stops (its exit path too), for up to 10 s.
        deadline = time.monotonic() + 10
        while engine.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                engine.send_signal(signal.SIGTERM)
            time.sleep(0.0005)
        assert engine.wait(30) == 0
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
