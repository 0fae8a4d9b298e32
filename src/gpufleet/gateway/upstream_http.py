"""A lean HTTP/1.1 client for plain `http://` upstreams: the gateway's hot path to local engines and http remotes.

Why not aiohttp here: under load against a fixed-response upstream, aiohttp's client was about 27% of the
gateway's CPU (py-spy, issue 22): a request object, a tracing-capable connector, a writer task, a payload
stream and several timers per request. This client does what the relay needs and no more: one POST written
in one call, httptools' response parser (uvicorn's) on an asyncio Protocol, a per-(host, port) keep-alive
pool, Content-Length, chunked and close-delimited bodies, a connect timeout and a read timeout (the longest
silence while a reader waits), and back-pressure (reading pauses while the body buffer is full).

    pool = HttpPool(connect_timeout_s=10)
    response = await pool.post("http://127.0.0.1:8000/v1/chat/completions", body, headers=b"", read_timeout_s=600)
    async for data in response.content.iter_any(): ...
    response.release()   # back to the pool when the body was read to its end; closed otherwise
    await pool.close()

Errors: `ConnectFailed` (nothing was sent), `TimeoutError`, `ConnectionDropped` (the request went out and the
connection ended before the answer's headers; `reused` says whether it was a kept-alive connection, which an
upstream may have closed as it was reused: the fallback loop's stale-connection retry) and, while the body is
read, `BodyBroken`. https:// and URLs carrying credentials stay with aiohttp (gateway/relay.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import httptools

_BUFFER_BYTES = 2**16  # body bytes held before reading from the socket pauses (aiohttp's read_bufsize)
_KEEPALIVE_S = 30.0  # an idle pooled connection older than this is closed, not reused
_MAX_IDLE_PER_HOST = 256
# What an answer may send before its headers are complete (aiohttp allows 8 KiB a line, 128 fields): past this, an
# upstream that trickles headers forever (a broken or hostile remote) is cut off instead of growing our memory.
MAX_HEAD_BYTES = 64 * 1024


class ConnectFailed(OSError):
    """The connection could not be opened (refused, unreachable): the request was not sent."""


class ConnectionDropped(ConnectionError):
    """The connection ended (or the upstream answered garbage) after the request was sent, before the headers."""

    def __init__(self, message: str, *, reused: bool) -> None:
        super().__init__(message)
        self.reused = reused


class BodyBroken(aiohttp.ClientPayloadError):
    """The answer's body broke off (the connection ended mid-body, or its framing is malformed).

    A ClientPayloadError so that the relay's handlers, written for aiohttp's responses too, catch it as one."""


class Headers(dict[str, str]):
    """Response headers by lower-cased name; `get` takes any case (the few the gateway reads)."""

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


def is_lean_url(url: str) -> bool:
    """True for the URLs this client serves: plain http:// without credentials in them."""
    return url.startswith("http://") and "@" not in url


class _Target:
    """A parsed URL: where to connect and the request line + Host header, built once."""

    __slots__ = ("head", "host", "port")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode("latin-1")


class _Connection(asyncio.Protocol):
    """One kept-alive TCP connection and the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> None:
        self._loop = loop
        self.key = key  # the pool's (host, port)
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.on_lost: Any = None  # the pool's: drop this connection from the idle list
        # The response in progress:
        self.active = False
        self.headers: Headers = Headers()
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.exc: BaseException | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._head_bytes = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout_s = 0.0
        self._wait_started = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports do not subclass it)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self.close()  # bytes nobody asked for: the connection is not in a state to reuse
            return
        try:
            self._parser.feed_data(data)
            if not self.headers_done:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._fail(BodyBroken(f"the answer's headers are over {MAX_HEAD_BYTES // 1024} KiB"))
                    self.close()
        except httptools.HttpParserError as err:
            self._fail(BodyBroken(f"malformed HTTP answer: {err}"))
            self.close()
        except httptools.HttpParserUpgrade:
            self._fail(BodyBroken("the upstream switched protocols"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        if self.active and not self.complete:
            if self.headers_done and _close_delimited(self.status, self.headers):
                self.complete = True  # the end of a body without length or chunks is the connection's end
                self.keep_alive = False
                self._wake()
            else:
                where = "in the middle of the body" if self.headers_done else "before the answer's headers"
                self._fail(BodyBroken(f"the connection closed {where}" + (f": {exc}" if exc else "")))

    def pause_writing(self) -> None:  # requests are written whole; the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            self.keep_alive = False  # a second answer to one request: do not trust this connection again

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:
            self.headers = Headers()  # an interim 1xx answer: the real one follows
            return
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _BUFFER_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # -- used by the client and the response
    def begin(self, read_timeout_s: float) -> None:
        self.active = True
        self.headers = Headers()
        self.status = 0
        self.headers_done = self.complete = self.keep_alive = False
        self.exc = None
        self._chunks = []
        self._buffered = self._head_bytes = 0
        self._read_timeout_s = read_timeout_s
        if self._paused and self.transport is not None:
            # The last answer arrived whole but was released unread over the buffer's size: read again.
            self._paused = False
            self.transport.resume_reading()

    def take(self) -> bytes:
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def has_data(self) -> bool:
        return bool(self._chunks)

    async def wait(self) -> None:
        """Until something arrives (headers, body, the end, a failure); TimeoutError after the read timeout."""
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        now = self._wait_started = loop.time()
        due = now + self._read_timeout_s
        timer = self._timer
        # One timer serves many waits: it re-arms itself while waits keep ending in time (no timer per read).
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._check_timeout)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_timeout(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        due = self._wait_started + self._read_timeout_s
        if self._loop.time() >= due:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = self._loop.call_at(due, self._check_timeout)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self.exc is None:
            self.exc = exc
        self._wake()

    def close(self) -> None:
        self.active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.exc is None
            and not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
        )


def _close_delimited(status: int, headers: Headers) -> bool:
    return (
        status not in (204, 304)
        and "content-length" not in headers
        and "chunked" not in headers.get("transfer-encoding", "").lower()
    )


class LeanResponse:
    """An answer whose headers arrived; its body is read with `read()`, `content.readany()` or
    `content.iter_any()`. `release()` returns the connection to the pool (when the body was read to its end);
    `close()` closes it. Either one ends the response: the other is then a no-op."""

    __slots__ = ("_conn", "_pool", "headers", "status")

    def __init__(self, conn: _Connection, pool: HttpPool) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn: _Connection | None = conn
        self._pool = pool

    @property
    def content_type(self) -> str:
        value = self.headers.get("content-type")
        return "application/octet-stream" if value is None else value.split(";", 1)[0].strip().lower()

    @property
    def content(self) -> LeanResponse:
        return self  # aiohttp's shape: `response.content.readany()`

    async def readany(self) -> bytes:
        """The body bytes that arrived (waiting for some); b"" at the end. BodyBroken, TimeoutError."""
        conn = self._conn
        if conn is None:
            return b""
        while True:
            if conn.has_data():
                return conn.take()
            if conn.exc is not None:
                raise conn.exc
            if conn.complete:
                return b""
            await conn.wait()

    async def iter_any(self) -> AsyncIterator[bytes]:
        while True:
            data = await self.readany()
            if not data:
                return
            yield data

    async def read(self) -> bytes:
        parts = [data async for data in self.iter_any()]
        return b"".join(parts)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.put_back(conn)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class HttpPool:
    """Kept-alive connections per (host, port) and the one `post` the relay needs."""

    def __init__(self, connect_timeout_s: float, keepalive_s: float = _KEEPALIVE_S) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 1024:
                self._targets.clear()
            target = self._targets[url] = _Target(url)
        return target

    async def post(self, url: str, body: bytes, *, headers: bytes, read_timeout_s: float) -> LeanResponse:
        """POST `body` (with the extra header lines `headers`, each ending in CRLF) and return the answer once its
        headers arrived. ConnectFailed, TimeoutError (connect or headers), ConnectionDropped."""
        target = self._target(url)
        conn, reused = await self._acquire(target)
        conn.begin(read_timeout_s)
        transport = conn.transport
        assert transport is not None
        transport.write(b"%s%sContent-Length: %d\r\n\r\n%s" % (target.head, headers, len(body), body))
        try:
            while not conn.headers_done:
                if conn.exc is not None:
                    raise ConnectionDropped(str(conn.exc), reused=reused)
                await conn.wait()
        except BaseException:
            conn.close()
            raise
        return LeanResponse(conn, self)

    async def _acquire(self, target: _Target) -> tuple[_Connection, bool]:
        key = (target.host, target.port)
        idle = self._idle.get(key)
        if idle:
            loop = asyncio.get_running_loop()
            oldest = loop.time() - self._keepalive_s
            while idle:
                conn = idle.pop()  # the most recently used: the least likely to have been let go by the server
                conn.on_lost = None
                transport = conn.transport
                if conn.closed or transport is None or transport.is_closing() or conn.idle_since < oldest:
                    conn.close()
                    continue
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, protocol = await loop.create_connection(lambda: _Connection(loop, key), target.host, target.port)
        except TimeoutError:
            raise  # (an OSError too)
        except OSError as err:
            raise ConnectFailed(str(err)) from None
        assert isinstance(protocol, _Connection)
        return protocol, False

    def put_back(self, conn: _Connection) -> None:
        """A finished response's connection: pooled when reusable, closed otherwise."""
        conn.active = False
        if self._closed or not conn.reusable():
            conn.close()
            return
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= _MAX_IDLE_PER_HOST:
            conn.close()
            return
        idle.append(conn)
        conn.on_lost = self._forget
        if self._sweep is None:
            self._sweep = loop.call_later(self._keepalive_s, self._sweep_idle)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)

    def _sweep_idle(self) -> None:
        self._sweep = None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self._keepalive_s
        remaining = False
        for idle in self._idle.values():
            for conn in [c for c in idle if c.idle_since < oldest]:
                idle.remove(conn)
                conn.on_lost = None
                conn.close()
            remaining = remaining or bool(idle)
        if remaining:
            self._sweep = loop.call_later(self._keepalive_s, self._sweep_idle)

    async def close(self) -> None:
        """Close every idle connection; connections still serving a response close when it ends."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for conn in idle:
                conn.on_lost = None
                conn.close()
        self._idle.clear()
