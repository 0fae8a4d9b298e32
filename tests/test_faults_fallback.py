"""Issue 21: answer from another target whenever nothing reached the client; no stream ends looking complete.

Through the real gateway (in-process), against the FAULT-INJECTING STAND-IN upstream (tests/fault_upstream.py)
and, for managed engines, a STAND-IN engine process (tests/test_swap_groups.py's: /health and a fixed answer,
here with a start delay and a slow answer) injected through build_app's `engines` seam.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.engines.base import LaunchSpec, local_urls
from gpufleet.gateway import build_app, running
from tests.fault_suite import (
    assert_ends_with_stream_error,
    config,
    content,
    fallbacks_counted,
    reset,
    sse_events,
    status_of,
    upstreams,
)
from tests.fault_upstream import FaultUpstream
from tests.gateway_harness import OpenGateway, chat
from tests.standin_kit import STANDIN_ENGINE_PROCESS

__all__ = ["reset", "upstreams"]  # the fault suite's fixtures, used here


# --- streams that end looking complete ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["a", "ab"])
async def test_a_stream_that_stops_without_finish_or_done_ends_with_an_error_event(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], model: str
) -> None:
    upstreams["a"].reset("no-finish-close")
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat(model, stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert content(events) == "tok0 tok1 "  # what reached the client before the upstream went away
    error = assert_ends_with_stream_error(events)
    assert "finish_reason" in error["message"]
    assert upstreams["b"].requests == 0  # bytes had reached the client: never switched silently
    assert (await status_of(http, "a"))["failures"] == 1


async def test_a_non_stream_answer_from_a_stream_that_stops_early_is_not_affected(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("no-finish-close")  # non-stream requests get the whole JSON answer in this mode
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("a"))
    assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"] == "stop"


async def test_an_upstream_error_event_is_normalised_keeping_its_message(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("error-event")  # vLLM's shape: {"error": {"message": "boom", "code": 500}}
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("a", stream=True))
    events = sse_events(response.text)
    assert events[-2] == {"error": {"message": "boom", "type": "server_error", "param": None, "code": "upstream_500"}}
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    assert content(events) == "tok0 "
    metrics = (await http.get("/metrics")).text
    assert 'gpufleet_errors_total{code="upstream_stream_error",model="a"} 1.0' in metrics


async def test_an_error_event_before_the_first_byte_falls_back(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("error-first")
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=True))
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == "b"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and "error" not in events[-2]
    assert await fallbacks_counted(http, "upstream_error") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_an_engine_500_about_an_unreadable_request_is_the_clients_400_and_cools_nothing(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], stream: bool
) -> None:
    upstreams["a"].reset("500-parse")
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=stream))
    assert response.status_code == 400, response.text
    assert "Failed to parse messages" in response.json()["error"]["message"]
    assert upstreams["b"].requests == 0  # another target would be sent the same request
    assert (await status_of(http, "a"))["failures"] == 0


# --- SIGTERM: requests with nothing sent yet when the grace runs out ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_request_still_waiting_when_the_shutdown_grace_ends_gets_503(
    upstreams: dict[str, FaultUpstream], stream: bool
) -> None:
    upstreams["a"].reset("hang-before-headers")
    app = build_app(parse_config(config(upstreams)))
    async with running(app) as gateway:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30) as http:
            request = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat("a", stream=stream)))
            while not upstreams["a"].requests:
                await asyncio.sleep(0.01)
            assert len(gateway.streams) == 1  # counted as in flight for the drain
            await gateway.streams.drain(0.05)  # what DrainingServer runs at SIGTERM
            response = await request
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "gateway_shutting_down" and "server.shutdown_grace_s" in error["message"]
    assert response.headers["retry-after"]


# --- managed engines: a cold standby, an admin stop ---------------------------------------------------------


class SlowStandInEngine:
    """Launches tests/standin_engine_process.py; `delays[name]` = (seconds before it listens, seconds per answer)."""

    kind = "llamacpp"

    def __init__(self, delays: dict[str, tuple[float, float]]) -> None:
        self.delays = delays

    def resolve(self, name: str, model: object) -> None:
        return None

    def launch_spec(self, name: str, model: object, resolved: None, port: int) -> LaunchSpec:
        start_s, answer_s = self.delays.get(name, (0.0, 0.0))
        urls = local_urls(port, metrics_path=None)
        return LaunchSpec(
            argv=[sys.executable, str(STANDIN_ENGINE_PROCESS), str(port), str(start_s), str(answer_s)],
            env={},
            port=port,
            base_url=urls["base_url"],
            health_url=urls["health_url"],
        )


@pytest.fixture
async def managed() -> AsyncIterator[Any]:
    """`await managed(raw_config, delays)` → an httpx client of a gateway whose llama.cpp models are stand-ins."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(raw: dict[str, Any], delays: dict[str, tuple[float, float]]) -> httpx.AsyncClient:
        app = build_app(parse_config(raw), engines={"llamacpp": SlowStandInEngine(delays)})
        ctx = running(app)
        await ctx.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=60)
        opened.append((ctx, http))
        return http

    yield make
    for ctx, http in opened:
        await http.aclose()
        await ctx.__aexit__(None, None, None)


def standby_config(primary_url: str, **server: Any) -> dict[str, Any]:
    """Route `r`: a remote primary at `primary_url`, then a managed cold standby."""
    return {
        "server": {"queue_timeout_s": 0.3, **server},
        "models": {
            "primary": {"engine": "remote", "url": primary_url},
            "standby": {"engine": "llamacpp", "source": "/nonexistent.gguf", "ready_timeout_s": 30, "stop_grace_s": 2},
        },
        "routes": {"r": {"targets": ["primary"], "fallbacks": ["standby"]}},
        "router": {"retry_backoff_s": 0, "cooldown_s": 30},
    }


async def test_a_cold_standby_serves_when_the_primary_is_down_and_is_not_cooled_down(managed: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens: the primary died
    http = await managed(standby_config(dead), {"standby": (1.0, 0.0)})  # starts slower than queue_timeout_s
    response = await http.post("/v1/chat/completions", json=chat("r"))
    # The standby was the last target left: the request waited for it (its ready_timeout_s), no 503.
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-model"] == "standby"
    targets = {t["model"]: t for t in (await http.get("/status")).json()["targets"]}
    assert targets["standby"]["healthy"] and targets["standby"]["failures"] == 0
    assert (await http.post("/v1/chat/completions", json=chat("r"))).status_code == 200


async def test_a_starting_target_is_skipped_without_cooldown_when_another_can_serve(
    managed: Any, upstreams: dict[str, FaultUpstream]
) -> None:
    raw = standby_config(upstreams["a"].url)
    raw["routes"] = {"r": {"targets": ["standby"], "fallbacks": ["primary"]}}  # the starting one first
    http = await managed(raw, {"standby": (2.0, 0.0)})
    response = await http.post("/v1/chat/completions", json=chat("r"))
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == "primary"
    targets = {t["model"]: t for t in (await http.get("/status")).json()["targets"]}
    assert targets["standby"]["healthy"] and targets["standby"]["failures"] == 0  # starting is not failing
    assert await fallbacks_counted(http, "starting", from_model="standby", route="r") == 1


async def test_a_request_whose_engine_an_admin_stop_kills_gets_503_model_was_stopped(managed: Any) -> None:
    raw = {"models": {"m": {"engine": "llamacpp", "source": "/nonexistent.gguf", "stop_grace_s": 2}}}
    http = await managed(raw, {"m": (0.0, 30.0)})  # each answer takes 30 s: the request is in the engine
    assert (await http.post("/admin/models/m/start")).status_code == 200
    request = asyncio.ensure_future(http.post("/v1/chat/completions", json=chat("m")))
    while not (await http.get("/status")).json()["targets"][0]["in_flight"]:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the request reached the engine
    assert (await http.post("/admin/models/m/stop")).status_code == 200
    response = await request
    assert response.status_code == 503, response.text
    assert "was stopped" in response.json()["error"]["message"]
