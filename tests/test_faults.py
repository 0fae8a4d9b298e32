"""The fault suite: misbehaving upstreams driven through the real gateway, and what each client sees.

The upstreams are FAULT-INJECTING STAND-INS (tests/fault_upstream.py): raw HTTP servers on loopback that
hang, cut streams mid-event, answer HTML, send malformed chunks or endless lines. The rule every case
checks: a client never sees a normal end for a broken answer. It gets a documented HTTP status before the
first byte, or, once a stream has started, an `upstream_stream_error` event followed by `data: [DONE]`.
The real-engine cases (a killed engine, embeddings on an engine without them) are in
test_faults_engine.py; SIGTERM with streams in flight is in test_faults_drain.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest

from gpufleet.config import parse_config
from gpufleet.engine_supervisor.ports import free_port
from gpufleet.gateway import build_app
from gpufleet.gateway.relay import SSERewriter, StreamStats
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
from tests.gateway_harness import OpenGateway, chat, served_app

__all__ = ["reset", "upstreams"]  # the fault suite's fixtures, used here

# --- every mode ends in a documented status or an error event (issue 12, "must show") -----------------------

# mode → (non-stream outcome, stream outcome) for a single target. An int is the HTTP status of an OpenAI
# error; "ok" a complete answer; "event" a 200 stream ending with the upstream_stream_error event + [DONE].
OUTCOMES: dict[str, tuple[int | str, int | str]] = {
    "ok": ("ok", "ok"),
    "400": (400, 400),
    "404": (404, 404),
    "422": (422, 422),
    "500": (502, 502),
    "429": (429, 429),
    "hang-before-headers": (504, 504),
    "hang-after-headers": (504, 504),
    "drop-after-request": (502, 502),
    "drop-mid-body": (502, "ok"),  # a stream request is answered by the stream code path: complete
    "cut-chunked": ("ok", "event"),
    "cut-close": ("ok", "event"),
    "html": (502, 502),
    "malformed-choices": (502, "event"),
    "malformed-usage": (502, "event"),
    "endless-line": (502, "event"),
    "slow-bytes": ("ok", "ok"),
    "no-finish-close": ("ok", "event"),
    "error-event": ("ok", "event"),
    "error-first": ("ok", 502),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("mode", list(OUTCOMES))
async def test_every_fault_ends_in_a_documented_status_or_error_event(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str, stream: bool
) -> None:
    upstreams["a"].reset(mode)
    upstreams["a"].interval_s = 0.001
    http = await gw(config(upstreams, timeout_s=1, router={"first_byte_timeout_s": 1}))
    response = await http.post("/v1/chat/completions", json=chat("a", stream=stream))
    expected = OUTCOMES[mode][stream]
    if isinstance(expected, int):
        assert response.status_code == expected, response.text
        error = response.json()["error"]
        assert isinstance(error["message"], str) and isinstance(error["code"], str)
        return
    assert response.status_code == 200, response.text
    if not stream:
        assert response.json()["choices"][0]["message"]["content"] == "hello from the stand-in"
        return
    events = sse_events(response.text)
    if expected == "event":
        code = "upstream_500" if mode == "error-event" else "upstream_stream_error"
        assert_ends_with_stream_error(events, code, finished=mode == "malformed-usage")
    else:
        assert events[-1] == "[DONE]" and "error" not in events[-2]
        assert content(events) == "tok0 tok1 tok2 tok3 tok4 "


# --- silent loss -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cut-close", "cut-chunked"])
async def test_stream_cut_mid_event_drops_the_partial_event_and_ends_with_an_error(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str
) -> None:
    upstreams["a"].reset(mode)
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)  # every data line is whole JSON: the partial event was dropped
    assert_ends_with_stream_error(events)
    assert content(events) == "tok0 "  # the two whole events before the cut (role, tok0) and nothing else
    assert upstreams["b"].requests == 0  # bytes had reached the client: never re-sent elsewhere


async def test_stream_answered_with_html_falls_back_before_the_first_byte(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("html")
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=True))
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == "b"
    assert content(sse_events(response.text)) == "tok0 tok1 tok2 tok3 tok4 "
    alone = await http.post("/v1/chat/completions", json=chat("a", stream=True))
    assert alone.status_code == 502
    assert "not an event stream" in alone.json()["error"]["message"]
    assert "text/html" in alone.json()["error"]["message"]


def test_event_stream_without_any_event_is_an_error_not_an_empty_answer() -> None:
    """A non-SSE body under an SSE content type (bytes may already have gone out): never a bare [DONE]."""
    rewriter = SSERewriter(served_model="a", client_wants_usage=False, stats=StreamStats(time.perf_counter()))
    assert rewriter.feed(b"<html>\n\n<body>Welcome to nginx!</body>\n\n") == b""
    assert rewriter.close() == b""
    assert rewriter.failure == "the upstream stream ended without sending any event"


async def test_stream_that_ends_without_finishing_is_an_error_not_a_clean_end(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    """A close-delimited stream cut exactly between two events looks whole byte-wise; no finish_reason, no [DONE]."""
    upstreams["a"].reset("cut-close")
    upstreams["a"].events = 1  # role, tok0, then half of the finish event: cut at the boundary after tok0
    http = await gw(config(upstreams))
    events = sse_events((await http.post("/v1/chat/completions", json=chat("a", stream=True))).text)
    assert_ends_with_stream_error(events)


@pytest.mark.parametrize("mode", ["malformed-choices", "malformed-usage"])
async def test_malformed_chunk_ends_the_stream_with_an_error_event(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str
) -> None:
    upstreams["a"].reset(mode)
    http = await gw(config(upstreams))
    response = await http.post(
        "/v1/chat/completions", json=chat("a", stream=True, stream_options={"include_usage": True})
    )
    # The malformed usage chunk comes after the finish chunk, as a real usage chunk does.
    error = assert_ends_with_stream_error(sse_events(response.text), finished=mode == "malformed-usage")
    assert "malformed" in error["message"]
    assert ("choices[0]" if mode == "malformed-choices" else "usage.prompt_tokens") in error["message"]


@pytest.mark.parametrize("mode", ["malformed-choices", "malformed-usage"])
async def test_malformed_answer_is_a_502_naming_the_field_under_the_strict_rule(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str
) -> None:
    upstreams["a"].reset(mode)
    http = await gw(config(upstreams, router={"retry_after_sent": False}))
    response = await http.post("/v1/chat/completions", json=chat("ab"))
    assert response.status_code == 502, response.text
    message = response.json()["error"]["message"]
    assert ("choices[0]" if mode == "malformed-choices" else "usage.prompt_tokens") in message
    assert upstreams["b"].requests == 0  # the upstream did the work: it is not run a second time elsewhere
    assert (await status_of(http, "a"))["failures"] == 1


@pytest.mark.parametrize("mode", ["malformed-choices", "malformed-usage"])
async def test_malformed_answer_falls_back_and_counts_against_the_target(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str
) -> None:
    upstreams["a"].reset(mode)
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("ab"))
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-model"] == "b"
    assert (await status_of(http, "a"))["failures"] == 1
    assert await fallbacks_counted(http, "malformed") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_endless_upstream_line_is_capped(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], stream: bool
) -> None:
    upstreams["a"].reset("endless-line")
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("a", stream=stream))
    if stream:
        error = assert_ends_with_stream_error(sse_events(response.text))
        assert "server.max_upstream_event_bytes" in error["message"]
    else:
        assert response.status_code == 502
        assert "server.max_upstream_body_bytes" in response.json()["error"]["message"]
    # The gateway let go of the upstream instead of buffering it forever.
    # (polled from a thread: the gateway shares this event loop and must run to close its connection)
    assert await asyncio.to_thread(upstreams["a"].wait_for, lambda u: u.closed_early == 1)


async def test_slow_upstream_one_byte_at_a_time_arrives_whole(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("slow-bytes")
    upstreams["a"].interval_s = 0.0005
    upstreams["a"].events = 2
    http = await gw(config(upstreams))
    events = sse_events((await http.post("/v1/chat/completions", json=chat("a", stream=True))).text)
    assert content(events) == "tok0 tok1 " and events[-1] == "[DONE]" and "error" not in events[-2]


# --- what may be retried, what counts against a target ---------------------------------------------------


DROPS = [
    ("drop-after-request", False),
    ("drop-after-request", True),
    ("drop-mid-body", False),
    ("hang-after-headers", False),
]


@pytest.mark.parametrize(("mode", "stream"), DROPS)
async def test_a_drop_after_the_request_reached_the_upstream_is_not_retried_under_the_strict_rule(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str, stream: bool
) -> None:
    upstreams["a"].reset(mode)
    http = await gw(config(upstreams, timeout_s=1, router={"retry_after_sent": False}))
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=stream))
    assert response.status_code == (504 if mode == "hang-after-headers" else 502), response.text
    assert upstreams["a"].requests == 1  # not re-sent on a new connection
    assert upstreams["b"].requests == 0  # nor to the fallback
    assert (await status_of(http, "a"))["failures"] == 1


@pytest.mark.parametrize(("mode", "stream"), DROPS)
async def test_a_failure_after_the_request_reached_the_upstream_falls_back_when_the_client_got_nothing(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], mode: str, stream: bool
) -> None:
    upstreams["a"].reset(mode)
    http = await gw(config(upstreams, timeout_s=1))
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=stream))
    assert response.status_code == 200, response.text
    assert response.headers["x-gpufleet-model"] == "b"
    if stream:
        assert sse_events(response.text)[-1] == "[DONE]"
    else:
        assert response.json()["choices"][0]["message"]["content"] == "hello from the stand-in"
    assert upstreams["a"].requests == 1 and upstreams["b"].requests == 1
    assert (await status_of(http, "a"))["failures"] == 1
    reason = "timeout" if mode == "hang-after-headers" else "disconnect"
    assert await fallbacks_counted(http, reason) == 1


async def test_connect_refused_still_falls_back(gw: OpenGateway, upstreams: dict[str, FaultUpstream]) -> None:
    raw = config(upstreams)
    raw["models"]["a"]["url"] = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    http = await gw(raw)
    response = await http.post("/v1/chat/completions", json=chat("ab"))
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == "b"
    assert 'reason="connect"' in (await http.get("/metrics")).text


async def test_broken_streams_count_against_the_target_until_cooldown(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("cut-chunked")
    http = await gw(config(upstreams, router={"failures_before_cooldown": 2}))
    events = sse_events((await http.post("/v1/chat/completions", json=chat("ab", stream=True))).text)
    assert_ends_with_stream_error(events)
    first = await status_of(http, "a")
    assert first["failures"] == 1 and first["healthy"] is True
    assert "stream" in first["last_error"]
    await http.post("/v1/chat/completions", json=chat("ab", stream=True))
    second = await status_of(http, "a")
    assert second["failures"] == 2 and second["healthy"] is False and second["cooldowns"] == 1
    assert upstreams["b"].requests == 0  # broken streams are never retried
    # In cooldown now: the route goes straight to its fallback.
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=True))
    assert response.headers["x-gpufleet-model"] == "b"
    assert 'gpufleet_target_cooldowns_total{model="a"} 1.0' in (await http.get("/metrics")).text


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_upstream_client_errors_are_the_clients_fault(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream], status: int
) -> None:
    upstreams["a"].reset(str(status))
    http = await gw(config(upstreams))
    for stream in (False, True):
        response = await http.post("/v1/chat/completions", json=chat("ab", stream=stream))
        assert response.status_code == status
        assert response.json()["error"]["code"] == f"upstream_{status}"
    assert upstreams["b"].requests == 0
    a = await status_of(http, "a")
    assert a["failures"] == 0 and a["healthy"] is True


async def test_upstream_501_is_relayed_without_cooldown(gw: OpenGateway, upstreams: dict[str, FaultUpstream]) -> None:
    upstreams["a"].reset("501")
    http = await gw(config(upstreams))
    response = await http.post("/v1/embeddings", json={"model": "ab", "input": "hi"})
    assert response.status_code == 501
    assert "does not support embeddings" in response.json()["error"]["message"]
    assert upstreams["b"].requests == 0
    a = await status_of(http, "a")
    assert a["failures"] == 0 and a["healthy"] is True


async def test_first_byte_timeout_covers_an_upstream_that_never_sends_headers(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("hang-before-headers")
    http = await gw(config(upstreams, timeout_s=5, router={"first_byte_timeout_s": 1.5}))
    started = time.monotonic()
    response = await http.post("/v1/chat/completions", json=chat("ab", stream=True))
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.headers["x-gpufleet-model"] == "b"
    assert elapsed < 5  # it did not wait for the remote's 5 s read timeout
    assert await fallbacks_counted(http, "first_byte_timeout") == 1
    # the abandoned request was closed (polled from a thread: the gateway runs on this event loop)
    assert await asyncio.to_thread(upstreams["a"].wait_for, lambda u: u.closed_early == 1)


async def test_all_targets_rate_limited_returns_429_with_the_upstreams_retry_after(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    upstreams["a"].reset("429")
    upstreams["b"].reset("429")
    upstreams["b"].retry_after = "12"
    http = await gw(config(upstreams))
    response = await http.post("/v1/chat/completions", json=chat("ab"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "12"  # the last target's own answer
    assert "every target of 'ab' failed" in response.json()["error"]["message"]
    alone = await http.post("/v1/chat/completions", json=chat("a", stream=True))
    assert alone.status_code == 429 and alone.headers["retry-after"] == "7"


async def test_all_targets_rate_limited_without_retry_after_computes_one_from_cooldowns(
    gw: OpenGateway, upstreams: dict[str, FaultUpstream]
) -> None:
    for server in upstreams.values():
        server.reset("429")
        server.retry_after = ""  # the stand-in then sends an empty header: no usable value
    http = await gw(config(upstreams, router={"cooldown_s": 20}))
    response = await http.post("/v1/chat/completions", json=chat("ab"))
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 20


# --- client disconnect (needs a real server: in-process transports do not report disconnects) -----------


def served(raw: dict[str, Any]) -> contextlib.AbstractContextManager[str]:
    """The gateway under a real uvicorn on loopback, in a thread; yields its base URL."""
    return served_app(build_app(parse_config(raw)))


@pytest.mark.parametrize("mode", ["hang-before-headers", "slow-events"])
def test_non_stream_client_disconnect_cancels_the_upstream_request(
    upstreams: dict[str, FaultUpstream], mode: str
) -> None:
    upstreams["a"].reset(mode)
    upstreams["a"].interval_s = 10  # slow-events: a non-stream answer after 5 × 10 s
    with served(config(upstreams)) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=chat("a"), timeout=1.0)
        # The client gave up after 1 s; the gateway must close the upstream connection instead of waiting.
        assert upstreams["a"].wait_for(lambda u: u.closed_early == 1, timeout_s=10), "upstream request kept running"
        assert upstreams["a"].requests == 1


async def test_stream_client_disconnect_before_the_first_byte_cancels_the_upstream(
    upstreams: dict[str, FaultUpstream],
) -> None:
    upstreams["a"].reset("hang-after-headers")
    with served(config(upstreams, router={"first_byte_timeout_s": 60})) as url:
        async with httpx.AsyncClient(timeout=1.0) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(f"{url}/v1/chat/completions", json=chat("a", stream=True))
        found = await asyncio.to_thread(upstreams["a"].wait_for, lambda u: u.closed_early == 1)
        assert found, "the gateway kept waiting 60 s for the first byte of a client that left"
