"""The cheaper mechanisms on the gateway's per-request path keep what the hardening (issue 12) guarantees.

- Client disconnects: `gpufleet serve` runs uvicorn with `http_limits.guarded_protocol`, which puts a
  `DisconnectWatch` in every request's scope; a non-stream request waiting for its upstream is cancelled
  from the protocol's `connection_lost` instead of by a second task blocked on `receive()`
  (tests/test_faults.py covers that fallback under plain uvicorn).
- Slow clients: the guard's one lazily moved timer still keeps the body's own deadline and each kept-alive
  request's header deadline.
- Kept-alive upstream connections: a POST is sent again only when it went out on a reused connection,
  now told by the connector instead of aiohttp's tracing.

The upstreams are FAULT-INJECTING STAND-INS (tests/fault_upstream.py) and a raw stand-in below that drops
a kept-alive connection when it is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app
from gpufleet.gateway.http_limits import (
    DISCONNECT_EXTENSION,
    DisconnectWatch,
    HttpLimits,
    disconnect_watch,
    guarded_protocol,
)
from gpufleet.gateway.relay import UpstreamClient, UpstreamDropped
from tests.fault_upstream import FaultUpstream
from tests.gateway_harness import OpenGateway, chat, served_app
from tests.standin_kit import read_request

LIMITS = HttpLimits(max_header_bytes=16384, header_timeout_s=10, body_timeout_s=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


def served_guarded(app: Any, limits: HttpLimits = LIMITS) -> contextlib.AbstractContextManager[str]:
    """`app` under uvicorn with the gateway's guarded protocol (as `gpufleet serve` runs it), in a thread."""
    return served_app(app, loop="uvloop", http=guarded_protocol(limits))


def gateway_app(upstream: FaultUpstream) -> Any:
    return build_app(parse_config({"models": {"a": {"engine": "remote", "url": upstream.url}}}))


@pytest.mark.parametrize("mode", ["hang-before-headers", "slow-events"])
def test_a_non_stream_client_that_leaves_cancels_the_upstream_under_the_gateway_protocol(
    upstream: FaultUpstream, mode: str
) -> None:
    upstream.reset(mode)
    upstream.interval_s = 10  # slow-events: a non-stream answer after 5 × 10 s
    with served_guarded(gateway_app(upstream)) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", json=chat("a"), timeout=1.0)
        assert upstream.wait_for(lambda u: u.closed_early == 1, timeout_s=10), "upstream request kept running"
        assert upstream.requests == 1


def test_a_kept_alive_connection_watches_each_request_it_carries(upstream: FaultUpstream) -> None:
    upstream.reset("ok")
    with served_guarded(gateway_app(upstream)) as url, httpx.Client(timeout=1.0) as client:
        first = client.post(f"{url}/v1/chat/completions", json=chat("a"))
        assert first.status_code == 200, first.text  # the watch of a finished request is disarmed...
        upstream.mode = "hang-before-headers"
        with pytest.raises(httpx.ReadTimeout):  # ...and the next request on the same connection is watched
            client.post(f"{url}/v1/chat/completions", json=chat("a"))
        assert upstream.wait_for(lambda u: u.closed_early == 1, timeout_s=10), "upstream request kept running"
        assert upstream.requests == 2


def test_the_gateway_protocol_puts_a_disconnect_watch_in_every_request_scope() -> None:
    seen: list[DisconnectWatch | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(disconnect_watch(scope))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with served_guarded(app) as url, httpx.Client() as client:
        assert [client.get(url).status_code for _ in range(2)] == [204, 204]
    assert len(seen) == 2 and all(isinstance(watch, DisconnectWatch) for watch in seen)
    assert seen[0] is seen[1]  # one per connection: both requests came on the same kept-alive connection


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that reads the whole body and answers its length."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size, more = size + len(message.get("body", b"")), message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(str(size)))]})
    await send({"type": "http.response.body", "body": str(size).encode()})


def read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                break
    return data


# The guard keeps one timer per connection and moves its deadline lazily; these check the deadlines it must
# still keep: the body's own (longer) one once the headers are in, and each kept-alive request's own header one.


def test_a_body_may_take_longer_than_the_header_timeout() -> None:
    limits = HttpLimits(max_header_bytes=16384, header_timeout_s=0.3, body_timeout_s=60)
    with (
        served_guarded(echo_length, limits) as url,
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20) as sock,
    ):
        sock.sendall(b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\n\r\nab")
        time.sleep(1.0)  # well past header_timeout_s, well within body_timeout_s
        sock.sendall(b"cde")
        assert read_response(sock).startswith(b"HTTP/1.1 200"), "the body was cut by the header deadline"


def test_each_kept_alive_request_gets_its_own_header_deadline() -> None:
    limits = HttpLimits(max_header_bytes=16384, header_timeout_s=0.5, body_timeout_s=60)
    with (
        served_guarded(echo_length, limits) as url,
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=20) as sock,
    ):
        sock.sendall(b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\nab")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"POST / HTTP/1.1\r\nhost: localhost\r\n")  # a second request whose headers never end
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 408"), answer


@pytest.mark.parametrize(
    "scope",
    [
        {},
        {"extensions": {}},
        {"extensions": {"http.response.trailers": {}}},
        {"extensions": {DISCONNECT_EXTENSION: {"watch": "not a watch"}}},
    ],
)
def test_no_disconnect_watch_under_other_servers(scope: dict[str, Any]) -> None:
    assert disconnect_watch(scope) is None


class _Protocol:
    """Stands in for the guarded protocol: counts how often the watch asked it to resume reading."""

    def __init__(self) -> None:
        self.resumed = 0

    def resume_reading_for_watch(self) -> None:
        self.resumed += 1


def test_a_watch_calls_back_once_when_the_connection_is_lost() -> None:
    protocol = _Protocol()
    watch = DisconnectWatch(protocol)  # type: ignore[arg-type]
    calls: list[str] = []
    watch.watch(lambda: calls.append("gone"))
    assert protocol.resumed == 1  # a paused connection would not notice the client leaving
    watch._connection_lost()
    watch._connection_lost()
    assert calls == ["gone"] and watch.lost


def test_a_disarmed_watch_calls_nothing() -> None:
    watch = DisconnectWatch(_Protocol())  # type: ignore[arg-type]
    calls: list[str] = []
    watch.watch(lambda: calls.append("gone"))
    watch.watch(None)
    watch._connection_lost()
    assert calls == []


def test_a_watch_armed_after_the_client_left_calls_back_at_once() -> None:
    watch = DisconnectWatch(_Protocol())  # type: ignore[arg-type]
    watch._connection_lost()
    calls: list[str] = []
    watch.watch(lambda: calls.append("gone"))
    assert calls == ["gone"]


# --- kept-alive upstream connections ------------------------------------------------------------------------


class DropsReusedConnection:
    """A STAND-IN upstream: answers the first request of each connection and keeps it alive, then closes the
    connection without answering when a second request arrives on it (an idle keep-alive the server let go
    of just as the client reused it, as llama.cpp's server does)."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self.dropped = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                await read_request(reader)
                if served:
                    self.dropped += 1
                    return
                body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                served += 1
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_reused_connection_that_drops_is_reported_as_such_and_not_sent_again() -> None:
    stand_in = DropsReusedConnection()
    server = await asyncio.start_server(stand_in.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    client = UpstreamClient(read_timeout_s=10)
    await client.start()
    try:
        response = await client.post(url, b"{}", api_key=None)
        assert orjson.loads(await response.read()) == {"ok": True}
        response.release()  # back to the pool: the next POST reuses this connection
        with pytest.raises(UpstreamDropped) as dropped:
            await client.post(url, b"{}", api_key=None)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    # Whether to send it again is the fallback loop's decision (an attempt of its own), not the client's.
    assert dropped.value.reused
    assert (stand_in.connections, stand_in.answered, stand_in.dropped) == (1, 1, 1)


@pytest.mark.parametrize("retry_after_sent", [True, False])
async def test_a_reused_connection_dropped_by_the_upstream_is_one_attempt_then_a_fresh_one(
    gw: OpenGateway, retry_after_sent: bool
) -> None:
    stand_in = DropsReusedConnection()
    server = await asyncio.start_server(stand_in.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        http = await gw(
            {
                "models": {"a": {"engine": "remote", "url": url}},
                "router": {"retry_after_sent": retry_after_sent, "retry_backoff_s": 0},
            }
        )
        assert (await http.post("/v1/chat/completions", json=chat("a"))).status_code == 200
        second = await http.post("/v1/chat/completions", json=chat("a"))
        metrics = (await http.get("/metrics")).text
    finally:
        server.close()
        await server.wait_closed()
    fallback = 'gpufleet_fallbacks_total{from_model="a",reason="disconnect",route="a"} 1.0'
    if retry_after_sent:
        # The drop counts as an attempt of `a`; the same target is tried once more, on a new connection.
        assert second.status_code == 200, second.text
        assert (stand_in.connections, stand_in.answered, stand_in.dropped) == (2, 2, 1)
        assert fallback in metrics
    else:
        # The strict rule: the upstream may have read the request, so it is not sent again.
        assert second.status_code == 502, second.text
        assert "dropped the connection after the request was sent" in second.json()["error"]["message"]
        assert (stand_in.connections, stand_in.answered, stand_in.dropped) == (1, 1, 1)
        assert fallback not in metrics


def test_a_stream_client_that_leaves_mid_stream_closes_the_upstream_under_the_gateway_protocol(
    upstream: FaultUpstream,
) -> None:
    # The relay is told of the lost connection by the protocol's watch (no watcher task of its own).
    upstream.reset("slow-events")
    upstream.interval_s, upstream.events = 0.3, 40  # 12 s of stream unless the gateway lets go
    with served_guarded(gateway_app(upstream)) as url, httpx.Client(timeout=5.0) as client:
        with client.stream("POST", f"{url}/v1/chat/completions", json=chat("a", stream=True)) as response:
            assert response.status_code == 200
            first = next(response.iter_bytes())
            assert first.startswith(b"data: ")
        # Leaving the block closed the client's connection after its first bytes.
        assert upstream.wait_for(lambda u: u.closed_early == 1, timeout_s=10), "upstream stream kept running"
