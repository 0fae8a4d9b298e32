"""Connection-level limits uvicorn lacks: request-header size, slow headers, slow bodies.

uvicorn's httptools protocol keeps reading a header of any size into memory (a 64 MB header took the
gateway from 102 to 321 MB RSS) and has no deadline for a request that trickles in at 1 byte/s, so a few
such clients hold connections forever (issue 12). This protocol is uvicorn's own, with three guards:

- the request line + headers may be at most `max_header_bytes`; more → 431 and the connection is closed;
- they must arrive within `header_timeout_s` of the connection (or of the request's first byte) → 408;
- the body must arrive within `body_timeout_s` after the headers → 408 (the app sees a disconnect).

It also tells the app when a client's connection is lost, through a `DisconnectWatch` in the request's
scope (`disconnect_watch(scope)`): a handler waiting for an upstream answer can register a callback instead
of running a second task blocked on `receive()` (that task and its cancellation cost about a tenth of the
gateway's CPU per non-stream request).

    uvicorn.run(app, http=guarded_protocol(config.server), ...)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("gpufleet.gateway")


@dataclass(frozen=True)
class HttpLimits:
    """The guards' settings (from `server:`)."""

    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float


def _plain_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


# The scope["extensions"] entry holding a request's DisconnectWatch (ASGI lets a server add extensions).
DISCONNECT_EXTENSION = "gpufleet.disconnect"


class DisconnectWatch:
    """One connection's "the client is gone" signal, for the request being served on it.

    A handler calls `watch(callback)` while it waits for something slow and `watch(None)` when done;
    `callback` runs once, from the event loop, when the connection is lost in between.
    """

    __slots__ = ("_callback", "_protocol", "lost")

    def __init__(self, protocol: GuardedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self._callback: Callable[[], object] | None = None
        self.lost = False

    def watch(self, callback: Callable[[], object] | None) -> None:
        if callback is not None and self.lost:
            callback()  # gone already: uvicorn's receive() would answer http.disconnect at once
            return
        self._callback = callback
        if callback is not None:
            # As uvicorn's receive() does before it waits: a connection whose reading is paused (a large body's
            # flow control, a pipelined next request) would not notice the client leaving.
            self._protocol.resume_reading_for_watch()

    def _connection_lost(self) -> None:
        self.lost = True
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def disconnect_watch(scope: Mapping[str, Any]) -> DisconnectWatch | None:
    """The request's DisconnectWatch, or None when another server (or a test transport) serves it."""
    extension = (scope.get("extensions") or {}).get(DISCONNECT_EXTENSION)
    watch = extension.get("watch") if extension else None
    return watch if isinstance(watch, DisconnectWatch) else None


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header-size and slow-client limits (`limits` set by a subclass)."""

    limits: HttpLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline_at = 0.0  # loop time by which the current phase must be done...
        self._deadline_what: str | None = None  # ...and which phase ("headers", "body"); None: no deadline
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._in_headers = True
        self._header_bytes = 0
        self._refused = False
        self._messages_done = 0  # requests completed on this connection (on_message_complete)
        self._head_bytes = 0  # the current request's line and headers as parsed
        self._watch = DisconnectWatch(self)
        self._extension: dict[object, object] = {"watch": self._watch}

    # ---- deadlines ---------------------------------------------------------------------------------------

    # One timer per connection, moved lazily: a request arms the header deadline, then the body deadline,
    # then disarms, and scheduling and cancelling a timer handle for each of those cost about as much as
    # the rest of the guard. Arming only moves the deadline; the timer is rescheduled when it fires early
    # (or when a deadline comes sooner than it), so a kept-alive connection reschedules about once per
    # header_timeout_s, not three times per request.

    def _arm(self, seconds: float, what: str) -> None:
        deadline = self.loop.time() + seconds
        self._deadline_at, self._deadline_what = deadline, what
        if self._timer is not None and self._timer_at <= deadline:
            return  # it fires first, and then waits again for what is left
        self._schedule(deadline)

    def _disarm(self) -> None:
        self._deadline_what = None  # the timer, if pending, finds nothing to do

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self.loop.call_at(when, self._deadline_reached), when

    def _stop_timer(self) -> None:
        self._deadline_what = None
        if self._timer is not None:
            self._timer.cancel()  # a closed connection must not stay referenced until the timer fires
            self._timer = None

    def _deadline_reached(self) -> None:
        self._timer = None
        what = self._deadline_what
        if what is None:
            return
        if self.loop.time() < self._deadline_at:
            self._schedule(self._deadline_at)
            return
        self._deadline_what = None
        self._expired(what)

    def _expired(self, what: str) -> None:
        if self.transport.is_closing():
            return
        limit = self.limits.header_timeout_s if what == "headers" else self.limits.body_timeout_s
        key = "header_timeout_s" if what == "headers" else "body_timeout_s"
        log.warning(
            "closing a connection from %s: its request %s took over %g s (server.%s)",
            _peer(self.client),
            what,
            limit,
            key,
        )
        self._refuse(408, "Request Timeout", f"the request {what} did not arrive within {limit:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self._refused = True
        self._stop_timer()
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_plain_response(status, reason, message))
        self.transport.close()

    # ---- protocol and parser callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, "headers")  # a connection that never sends a request

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)
        self._watch._connection_lost()

    def resume_reading_for_watch(self) -> None:
        if self.flow is not None and not self.transport.is_closing():
            self.flow.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        was_in_headers, done_before = self._in_headers, self._messages_done
        super().data_received(data)
        # httptools buffers a partial header line itself and calls on_header only once it is complete, so the
        # bytes are counted as they arrive, not in the callbacks. A chunk that finished the head (or a body)
        # is not counted: only a head still incomplete after it. (A chunk holding a whole request ends with
        # _in_headers True again, for the next request: counting it would refuse any one-read request over
        # the limit, body included.)
        if was_in_headers and self._in_headers and self._messages_done == done_before and not self._refused:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                log.warning(
                    "refusing a request from %s: headers over %d bytes (server.max_header_bytes)",
                    _peer(self.client),
                    self.limits.max_header_bytes,
                )
                self._refuse(
                    431,
                    "Request Header Fields Too Large",
                    f"request line and headers exceed {self.limits.max_header_bytes} bytes",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {DISCONNECT_EXTENSION: self._extension}
        self._head_bytes = 0
        self._arm(self.limits.header_timeout_s, "headers")

    # A head that arrived whole in one read never trips the raw count above: its parsed size is checked
    # before the request reaches the app.
    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._head_bytes > self.limits.max_header_bytes:
            log.warning(
                "refusing a request from %s: headers over %d bytes (server.max_header_bytes)",
                _peer(self.client),
                self.limits.max_header_bytes,
            )
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"request line and headers exceed {self.limits.max_header_bytes} bytes",
            )
            return  # the app never sees it
        self._arm(self.limits.body_timeout_s, "body")  # disarmed when the message completes
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._in_headers, self._header_bytes = True, 0  # what arrives next is the next request's head
        self._messages_done += 1
        super().on_message_complete()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to pass as uvicorn's `http=`, with `limits` applied to every connection."""
    return type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})
