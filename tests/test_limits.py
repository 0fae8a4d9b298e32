"""HTTP limits of a real `gpufleet serve`: header size, slow headers, slow bodies (issue 12).

Before: a 64 MB header took the gateway from 102 to 321 MB RSS and 1 byte/s clients held connections for
as long as they liked. The upstream is the STAND-IN from standin_upstream.py (no engine is needed to test
the HTTP server).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.server import ServerState

from gpufleet.gateway.http_limits import HttpLimits, guarded_protocol
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream

TIMEOUT_S = 1.0  # the gateway's header and body timeouts in this file


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    upstream = StandInUpstream().start()
    config = {
        "models": {"echo": {"engine": "remote", "url": upstream.url}},
        "server": {"max_header_bytes": 16384, "header_timeout_s": TIMEOUT_S, "body_timeout_s": TIMEOUT_S},
    }
    served = start_gateway(config, tmp_path_factory.mktemp("limits"))
    yield served
    stop_gateway(served)
    upstream.stop()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def connect(gw: ServedGateway) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """What the server sent until it closed the connection ('' when it closed without answering)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


@pytest.mark.processes
def test_64_mb_header_is_refused_without_growing_memory(gateway: ServedGateway) -> None:
    before = rss_bytes(gateway.process.pid)
    sock = connect(gateway)
    sent = 0
    block = b"a" * 65536
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: localhost\r\nx-big: ")
        while sent < 64 * 1024 * 1024:
            sock.sendall(block)
            sent += len(block)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the gateway closed the connection: what it should do
    answer = read_all(sock)
    sock.close()
    assert sent < 64 * 1024 * 1024, "the gateway read the whole 64 MB header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    assert rss_bytes(gateway.process.pid) - before < 16 * 1024 * 1024
    assert httpx.get(f"{gateway.url}/health", timeout=10).status_code == 200  # and it still serves


@pytest.mark.processes
def test_header_just_under_the_limit_is_served(gateway: ServedGateway) -> None:
    response = httpx.get(f"{gateway.url}/health", headers={"x-pad": "a" * 12000}, timeout=10)
    assert response.status_code == 200


@pytest.mark.processes
def test_header_over_the_limit_gets_431(gateway: ServedGateway) -> None:
    response = httpx.get(f"{gateway.url}/health", headers={"x-pad": "a" * 20000}, timeout=10)
    assert response.status_code == 431
    assert "16384" in response.text


def trickle(sock: socket.socket, data: bytes, interval_s: float) -> int:
    """Send `data` one byte per `interval_s` until the server closes; how many bytes went out."""
    for sent in range(len(data)):
        try:
            sock.send(data[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            return sent
        time.sleep(interval_s)
        if _closed_by_peer(sock):
            return sent + 1
    return len(data)


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(65536, socket.MSG_PEEK) is not None  # data (the 408) or b"" (closed)
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.setblocking(True)


@pytest.mark.processes
def test_slow_headers_are_cut_with_408(gateway: ServedGateway) -> None:
    request = b"GET /health HTTP/1.1\r\nhost: localhost\r\nx-slow: " + b"s" * 40 + b"\r\n\r\n"
    sock = connect(gateway)
    sent = trickle(sock, request, 0.25)  # 4 bytes/s: the whole request would take 16 s
    answer = read_all(sock)
    sock.close()
    assert sent < len(request)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive" in answer


@pytest.mark.processes
def test_slow_body_is_cut_with_408(gateway: ServedGateway) -> None:
    body = b'{"model": "echo", "messages": [{"role": "user", "content": "hi"}]}'
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    sock = connect(gateway)
    sock.sendall(head)
    sent = trickle(sock, body, 0.25)
    answer = read_all(sock)
    sock.close()
    assert sent < len(body)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body did not arrive" in answer
    assert "Traceback" not in gateway.log()


@pytest.mark.processes
def test_idle_connection_without_a_request_is_closed(gateway: ServedGateway) -> None:
    sock = connect(gateway)
    answer = read_all(sock)  # blocks until the gateway gives up on the silent connection
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest.mark.processes
def test_normal_requests_are_unaffected(gateway: ServedGateway, tmp_path: Path) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "x" * 100_000}]}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200


class _RecordingTransport(asyncio.Transport):
    """A transport that keeps what the protocol writes (to feed the protocol one read of our choosing)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("peername", "sockname") else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def test_a_whole_large_request_in_one_read_is_not_counted_as_headers() -> None:
    # The loopback kernel may hand the gateway a 100 KB request in one read; it once counted all of it as
    # header bytes (431) because the finished request reset the parser to "in headers" for the next one.
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = uvicorn.Config(app, access_log=False)
    config.load()
    protocol_class = guarded_protocol(HttpLimits(max_header_bytes=64 * 1024, header_timeout_s=10, body_timeout_s=60))
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _RecordingTransport()
    protocol.connection_made(transport)
    body = b"x" * 100_000
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    for _ in range(50):
        if transport.written:
            break
        await asyncio.sleep(0.01)
    assert transport.written.startswith(b"HTTP/1.1 200 "), transport.written[:60]
    protocol.connection_lost(None)
