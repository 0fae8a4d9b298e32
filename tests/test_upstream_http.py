"""The lean upstream HTTP/1.1 client (gateway/upstream_http.py) against real loopback servers.

Each test runs a raw asyncio STAND-IN server (tests/standin_kit.py reads its requests) that answers, or
misbehaves, byte by byte: kept-alive reuse, Content-Length, chunked and close-delimited bodies, a kept-alive
connection the server lets go of, timeouts, a refused connection, a body larger than the read buffer, a body
cut off in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gpufleet.engine_supervisor.ports import free_port
from gpufleet.errors import UpstreamError
from gpufleet.gateway import upstream_http
from gpufleet.gateway.relay import UpstreamClient, UpstreamDropped
from gpufleet.gateway.upstream_http import BodyBroken, ConnectFailed, ConnectionDropped, HttpPool
from tests.standin_kit import RawRequest, chunked, read_request

Answer = Callable[[RawRequest, asyncio.StreamWriter, int], Awaitable[bool]]  # False: close the connection


@dataclass
class StandIn:
    """What the stand-in saw: connections opened, requests read."""

    url: str
    connections: int = 0
    requests: list[RawRequest] = field(default_factory=list)


@contextlib.asynccontextmanager
async def stand_in(answer: Answer) -> AsyncIterator[StandIn]:
    """A raw server on a free loopback port answering each request with `answer(request, writer, nth_on_conn)`."""
    seen = StandIn("")
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        writers.add(writer)
        nth = 0
        try:
            while True:
                request = await read_request(reader)
                seen.requests.append(request)
                if not await answer(request, writer, nth):
                    return
                await writer.drain()
                nth += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    try:
        yield seen
    finally:
        for writer in list(writers):
            writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def pool(connect_timeout_s: float = 5) -> AsyncIterator[HttpPool]:
    lean = HttpPool(connect_timeout_s=connect_timeout_s)
    try:
        yield lean
    finally:
        await lean.close()


def with_length(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def answer_json(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
    writer.write(with_length(b'{"echo": %s}' % request.body))
    return True


async def post(lean: HttpPool, url: str, body: bytes = b"1", read_timeout_s: float = 5) -> bytes:
    response = await lean.post(url, body, headers=b"Content-Type: application/json\r\n", read_timeout_s=read_timeout_s)
    data = await response.read()
    response.release()
    return data


async def test_a_kept_alive_connection_carries_the_next_request() -> None:
    async with stand_in(answer_json) as server, pool() as lean:
        answers = [await post(lean, server.url, b"%d" % i) for i in range(3)]
    assert answers == [b'{"echo": 0}', b'{"echo": 1}', b'{"echo": 2}']
    assert server.connections == 1
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == server.url.split("/")[2]


async def test_a_chunked_body_is_read_whole_and_the_connection_kept() -> None:
    async def answer(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: one\n\n", b"data: two\n\n"):
            writer.write(chunked(piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    async with stand_in(answer) as server, pool() as lean:
        response = await lean.post(server.url, b"{}", headers=b"", read_timeout_s=5)
        assert (response.status, response.content_type) == (200, "text/event-stream")
        assert response.headers.get("Content-Type") == "text/event-stream"
        reads = [data async for data in response.content.iter_any()]
        response.release()
        assert b"".join(reads) == b"data: one\n\ndata: two\n\n"
        assert await post(lean, server.url) == b"data: one\n\ndata: two\n\n"
    assert server.connections == 1


async def test_a_close_delimited_body_ends_with_the_connection_and_is_not_reused() -> None:
    async def answer(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: x\n\n")
        return False

    async with stand_in(answer) as server, pool() as lean:
        assert await post(lean, server.url) == b"data: x\n\n"
        assert await post(lean, server.url) == b"data: x\n\n"
    assert server.connections == 2


async def test_a_response_released_before_its_end_closes_its_connection() -> None:
    async def slow(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"def")
        return True

    async with stand_in(slow) as server, pool() as lean:
        response = await lean.post(server.url, b"1", headers=b"", read_timeout_s=5)
        response.release()  # the body was not read to its end: the connection cannot carry another request
        response.close()  # a no-op once released
        assert await post(lean, server.url) == b"abcdef"
    assert server.connections == 2


async def test_a_kept_alive_connection_dropped_on_reuse_is_reported_as_reused() -> None:
    async def answer(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        if nth:
            return False  # the server let the idle connection go just as it was reused
        writer.write(with_length(b"{}"))
        return True

    async with stand_in(answer) as server, pool() as lean:
        assert await post(lean, server.url) == b"{}"
        with pytest.raises(ConnectionDropped) as dropped:
            await post(lean, server.url)
        assert dropped.value.reused
        # The next request opens a fresh connection, and a fresh connection that drops is not "reused".
        assert await post(lean, server.url) == b"{}"
        with pytest.raises(ConnectionDropped) as again:
            await post(lean, server.url)
        assert again.value.reused

    async def drop(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        return False

    async with stand_in(drop) as server, pool() as lean:
        with pytest.raises(ConnectionDropped) as fresh:
            await post(lean, server.url)
    assert not fresh.value.reused


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def answer(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(with_length(b"{}"))
        await writer.drain()
        return False  # closes after answering, without saying `connection: close`

    async with stand_in(answer) as server, pool() as lean:
        assert await post(lean, server.url) == b"{}"
        await asyncio.sleep(0.05)  # the close reaches the client while the connection sits in the pool
        assert await post(lean, server.url) == b"{}"
    assert server.connections == 2


async def test_the_upstream_client_reports_a_dropped_reused_connection_as_stale() -> None:
    async def answer(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        if nth:
            return False
        writer.write(with_length(b"{}"))
        return True

    client = UpstreamClient(read_timeout_s=5)
    await client.start()
    try:
        async with stand_in(answer) as server:
            response = await client.post(server.url, b"{}", api_key="sk-test")
            assert await response.read() == b"{}"
            response.release()
            with pytest.raises(UpstreamDropped) as dropped:
                await client.post(server.url, b"{}", api_key="sk-test")
    finally:
        await client.close()
    assert dropped.value.reused and not dropped.value.retryable
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"


async def test_an_upstream_silent_before_its_headers_times_out() -> None:
    async def hang(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        await asyncio.sleep(30)
        return False

    async with stand_in(hang) as server, pool() as lean:
        with pytest.raises(TimeoutError):
            await lean.post(server.url, b"{}", headers=b"", read_timeout_s=0.2)


async def test_an_upstream_silent_mid_body_times_out_the_read() -> None:
    async def stall(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(30)
        return False

    async with stand_in(stall) as server, pool() as lean:
        response = await lean.post(server.url, b"{}", headers=b"", read_timeout_s=0.2)
        assert await response.content.readany() == b"abc"
        with pytest.raises(TimeoutError):
            await response.content.readany()
        response.close()


async def test_the_upstream_client_maps_a_timeout_and_a_refused_connection() -> None:
    async def hang(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        await asyncio.sleep(30)
        return False

    client = UpstreamClient(read_timeout_s=5)
    await client.start()
    try:
        async with stand_in(hang) as server:
            with pytest.raises(UpstreamError) as timed_out:
                await client.post(server.url, b"{}", api_key=None, timeout_s=0.2)
        with pytest.raises(UpstreamError) as refused:
            await client.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", b"{}", api_key=None)
    finally:
        await client.close()
    assert timed_out.value.status_code == 504 and "did not answer in time" in str(timed_out.value)
    assert "cannot connect to upstream" in str(refused.value) and refused.value.retryable


async def test_a_refused_connection_is_a_connect_failure() -> None:
    async with pool() as lean:
        with pytest.raises(ConnectFailed):
            await lean.post(f"http://127.0.0.1:{free_port()}/v1/x", b"{}", headers=b"", read_timeout_s=5)


async def test_a_body_larger_than_the_buffer_pauses_reading_until_the_reader_takes_it() -> None:
    body = bytes(range(256)) * 64 * 1024  # 16 MiB
    writer_blocked = asyncio.Event()

    async def big(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(with_length(body))
        # The client reads nothing yet: its socket buffers fill and the server cannot hand all of it off.
        await asyncio.sleep(0.3)
        if writer.transport.get_write_buffer_size() > 0:
            writer_blocked.set()
        return True

    async with stand_in(big) as server, pool() as lean:
        response = await lean.post(server.url, b"{}", headers=b"", read_timeout_s=5)
        await asyncio.sleep(0.4)
        assert writer_blocked.is_set()
        assert await response.read() == body
        response.release()
        assert await post(lean, server.url) == body
    assert server.connections == 1


async def test_an_answer_released_unread_does_not_stall_the_next_request_on_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(upstream_http, "_BUFFER_BYTES", 64)  # a 1 kB body that arrives whole pauses reading
    body = b"x" * 1000

    async def answer(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(with_length(body))
        return True

    async with stand_in(answer) as server, pool() as lean:
        response = await lean.post(server.url, b"{}", headers=b"", read_timeout_s=5)
        await asyncio.sleep(0.05)
        response.release()  # unread, but whole: the connection goes back to the pool
        assert await post(lean, server.url, read_timeout_s=2) == body
    assert server.connections == 1


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_cut_mid_way_is_a_broken_body(framing: str) -> None:
    async def cut(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        if framing == "chunked":
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked(b"data: x\n\n") + b"40\r\nda"
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 50)
        await writer.drain()
        return False

    async with stand_in(cut) as server, pool() as lean:
        response = await lean.post(server.url, b"{}", headers=b"", read_timeout_s=5)
        with pytest.raises(BodyBroken):
            await response.read()
        response.close()


async def test_garbage_instead_of_an_answer_is_a_dropped_connection() -> None:
    async def garbage(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        return False

    async with stand_in(garbage) as server, pool() as lean:
        with pytest.raises(ConnectionDropped) as dropped:
            await lean.post(server.url, b"{}", headers=b"", read_timeout_s=5)
    assert not dropped.value.reused


async def test_headers_that_never_end_are_cut_off_at_the_bound() -> None:
    """A broken or hostile remote trickling header lines forever is cut off, not buffered without end."""

    async def endless_headers(request: RawRequest, writer: asyncio.StreamWriter, nth: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(upstream_http.MAX_HEAD_BYTES // 1000 * 2):
            writer.write(b"x-pad-%d: %s\r\n" % (i, b"a" * 990))
            await writer.drain()
        await asyncio.sleep(5)
        return False

    async with stand_in(endless_headers) as server, pool() as lean:
        with pytest.raises(ConnectionDropped, match="headers are over 64 KiB"):
            await lean.post(server.url, b"{}", headers=b"", read_timeout_s=5)
