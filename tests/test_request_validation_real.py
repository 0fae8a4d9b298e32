"""Request hardening against the real embedded engine (llama.cpp via xllamacpp, SmolLM2 from PyPI).

llama.cpp reads `n_predict` before `max_tokens`, so a route's `max_tokens_cap` was bypassed with it; a
malformed tool definition made llama.cpp answer 500 and cooled the route down for everyone (issue 12).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = pytest.mark.slow

CAP = 8


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    config = {"models": {"smollm2": smollm2_model(parallel=2, defaults={"max_tokens_cap": CAP})}}
    gateway = start_gateway(config, tmp_path_factory.mktemp("capped"))
    yield gateway
    stop_gateway(gateway)


def ask(**extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell a long story."}],
        "temperature": 0,
        "seed": 7,
        "ignore_eos": True,
        **extra,
    }


@pytest.mark.parametrize("field", ["n_predict", "max_tokens", "max_completion_tokens", "max_new_tokens"])
def test_cap_holds_whatever_the_token_field_is_called(capped: ServedGateway, field: str) -> None:
    response = httpx.post(f"{capped.url}/v1/chat/completions", json=ask(**{field: 500}), timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] <= CAP


def test_cap_holds_for_n_predict_minus_one_in_a_stream(capped: ServedGateway) -> None:
    body = ask(n_predict=-1, stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", f"{capped.url}/v1/chat/completions", json=body, timeout=120) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert '"completion_tokens":' in lines[-1]
    usage = httpx.Response(200, content=lines[-1].removeprefix("data: ")).json()["usage"]
    assert 0 < usage["completion_tokens"] <= CAP


def test_malformed_tool_is_refused_before_llama_cpp_and_the_target_stays_healthy(capped: ServedGateway) -> None:
    response = httpx.post(f"{capped.url}/v1/chat/completions", json=ask(tools=[{"type": "function"}]), timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools[0].function"
    targets = httpx.get(f"{capped.url}/status", timeout=10).json()["targets"]
    assert [(t["healthy"], t["failures"]) for t in targets] == [(True, 0)]
    again = httpx.post(f"{capped.url}/v1/chat/completions", json=ask(max_tokens=2), timeout=60)
    assert again.status_code == 200


def listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets in LISTEN state on `port`, from /proc/net/tcp{,6} (hex, as the kernel shows)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_embedded_engine_listens_on_loopback_only(capped: ServedGateway) -> None:
    base_url = str(capped.status("smollm2")["base_url"])
    port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    assert base_url.startswith("http://127.0.0.1:")
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing on 0.0.0.0 or ::
