"""A FAULT-INJECTING STAND-IN upstream for tests (not a real engine).

A raw asyncio HTTP/1.1 server on 127.0.0.1 (run in a background thread), so that it can misbehave at the
byte level in ways a framework would not allow: hang before or after the headers, cut a stream in the middle
of an event (chunked, or close-delimited with no framing at all), answer a stream request with HTML, send
malformed chunks, a line that never ends, a stream at one byte per read, a close-delimited stream that stops
between events without a finish chunk or [DONE], or its own error event (first, or mid-stream). `mode`
picks the behaviour for every following request; `"ok"` answers like a healthy OpenAI server (the fallback
target of the tests).

It records what a test needs to prove the gateway's behaviour from the upstream's side: how many requests
reached it (`requests`: bodies fully read) and how many of them the client closed before the answer was
complete (`closed_early`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gpufleet.engine_supervisor.ports import free_port
from tests.standin_kit import SSE_DONE, chunked, http_head, read_request, sse

MODES = (
    "ok",
    "400",
    "404",
    "422",
    "500",
    "501",
    "429",
    "hang-before-headers",
    "hang-after-headers",
    "drop-after-request",
    "drop-mid-body",
    "cut-chunked",
    "cut-close",
    "html",
    "malformed-choices",
    "malformed-usage",
    "endless-line",
    "slow-bytes",
    "slow-events",
    "no-finish-close",
    "error-event",
    "error-first",
    "500-parse",
)


class FaultUpstream:
    """Runs the fault-injecting stand-in on a free port: `FaultUpstream().start()`, then set `mode`."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.retry_after = "7"  # the Retry-After header of mode "429"
        self.interval_s = 0.2  # "slow-events": pause between events; "slow-bytes": pause between bytes
        self.events = 5  # content events in a stream ("slow-events" uses it to set the stream's length)
        self.requests = 0
        self.closed_early = 0
        self.bodies: list[dict[str, Any]] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self, mode: str = "ok") -> None:
        assert mode in MODES, mode
        self.mode, self.retry_after, self.interval_s, self.events = mode, "7", 0.2, 5
        # malformed-* streams: the pause before the bad event, so that the events before it reached the client
        # (a failure found before the client got a byte falls back instead: issue 21)
        self.fault_pause_s = 0.2
        self.requests = self.closed_early = 0
        self.bodies.clear()

    def start(self) -> FaultUpstream:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fault upstream did not start")
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _close_all(self) -> None:
        """Stop listening and end every connection still open (hanging modes keep some open)."""
        if self._server is not None:
            self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wait_for(self, predicate: Callable[[FaultUpstream], bool], timeout_s: float = 10) -> bool:
        """Poll until `predicate(self)` holds (the upstream sees events after the gateway answered)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", self.port))
        self._started.set()
        self._loop.run_forever()

    # --- HTTP plumbing ---------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if request.method == "GET":
                    await _answer(writer, 200, b'{"object":"list","data":[]}')
                    continue
                self.requests += 1
                payload = orjson.loads(request.body) if request.body else {}
                self.bodies.append(payload)
                keep_alive = await self._respond(reader, writer, request.path, payload)
                if not keep_alive or request.headers.get("connection", "").lower() == "close":
                    return
        except ConnectionError:
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _until_client_closes(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Hang (or keep sending with `send`) until the client closes the connection; record that it did."""
        while True:
            if send is None:
                try:
                    data = await asyncio.wait_for(reader.read(1), 3600)
                except TimeoutError:
                    return False
                if not data:
                    break
            else:
                try:
                    await send()
                except ConnectionError:
                    break
                if writer.is_closing() or reader.at_eof():
                    break
        self.closed_early += 1
        return False

    async def _respond(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: dict[str, Any]
    ) -> bool:
        """Answer one request according to `mode`; False closes the connection afterwards."""
        mode, stream = self.mode, bool(body.get("stream"))
        if mode in ("400", "404", "422", "500", "501"):
            status = int(mode)
            message = {
                "501": "This server does not support embeddings. Start it with `--embeddings`",
                "422": "messages: field required",
            }.get(mode, f"stand-in error {mode}")
            kind = "server_error" if status >= 500 else "invalid_request_error"
            await _answer(writer, status, orjson.dumps({"error": {"message": message, "type": kind, "code": status}}))
            return True
        if mode == "500-parse":  # llama.cpp's answer to a message with "name": null
            message = "Failed to parse messages: [json.exception.type_error.302] type must be string, but is null"
            await _answer(
                writer, 500, orjson.dumps({"error": {"message": message, "type": "server_error", "code": 500}})
            )
            return True
        if mode == "429":
            error = orjson.dumps({"error": {"message": "rate limited", "type": "rate_limit_error", "code": 429}})
            await _answer(writer, 429, error, extra=f"Retry-After: {self.retry_after}\r\n")
            return True
        if mode == "hang-before-headers":
            return await self._until_client_closes(reader, writer)
        if mode == "drop-after-request":
            return False  # the request was read in full; the connection closes without an answer
        if mode == "html":
            page = b"<html><body><h1>Welcome to nginx!</h1></body></html>"
            await _answer(writer, 200, page, content_type="text/html")
            return True
        if not stream:
            return await self._respond_json(reader, writer, path, body)
        return await self._respond_stream(reader, writer, body)

    async def _respond_json(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: dict[str, Any]
    ) -> bool:
        mode = self.mode
        answer: dict[str, Any] = completion(body)
        if path.endswith("/embeddings"):
            answer = {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "model": "meaningless",
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        if mode == "malformed-choices":
            answer["choices"] = [1]
        elif mode == "malformed-usage":
            answer["usage"]["prompt_tokens"] = "abc"
        raw = orjson.dumps(answer)
        if mode == "hang-after-headers":
            writer.write(http_head(200, "application/json", f"Content-Length: {len(raw)}\r\n"))
            await writer.drain()
            return await self._until_client_closes(reader, writer)
        if mode == "drop-mid-body":
            writer.write(http_head(200, "application/json", f"Content-Length: {len(raw)}\r\n") + raw[:10])
            await writer.drain()
            return False
        if mode == "endless-line":
            writer.write(http_head(200, "application/json", "Transfer-Encoding: chunked\r\n") + chunked(b'{"id":"'))
            filler = chunked(b"a" * 65536)
            return await self._until_client_closes(reader, writer, lambda: _send(writer, filler, 0))
        if mode == "slow-events":
            # Think for interval_s × events before answering, noticing a client that leaves meanwhile.
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(1), self.interval_s * self.events):
                    self.closed_early += 1
                    return False
        await _answer(writer, 200, raw)
        return True

    async def _respond_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict[str, Any]
    ) -> bool:
        mode = self.mode
        events = stream_events(body, int(body.get("max_tokens") or self.events))  # one event per "token"
        if mode == "malformed-choices":
            events.insert(2, b'data: {"id":"x","object":"chat.completion.chunk","choices":[1]}\n\n')
        elif mode == "malformed-usage":
            usage = {
                "id": "x",
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": {"prompt_tokens": "abc", "completion_tokens": 2},
            }
            events.insert(len(events) - 1, sse(usage))
        if mode in ("error-event", "error-first"):
            # The upstream's own error event, in vLLM's shape (integer code, no type), then [DONE].
            error = b'data: {"error":{"message":"boom","code":500}}\n\n'
            events.insert(0 if mode == "error-first" else 2, error)
        if mode == "no-finish-close":
            # Close-delimited, whole events, then the connection closes: no finish chunk and no [DONE].
            writer.write(http_head(200, "text/event-stream", "Connection: close\r\n") + b"".join(events[:3]))
            await writer.drain()
            return False
        if mode == "cut-close":
            # HTTP/1.1 with neither Content-Length nor chunked encoding: the body ends when the connection does.
            writer.write(http_head(200, "text/event-stream", "Connection: close\r\n"))
            writer.write(b"".join(events[:2]) + events[2][: len(events[2]) // 2])
            await writer.drain()
            return False
        writer.write(http_head(200, "text/event-stream", "Transfer-Encoding: chunked\r\n"))
        if mode == "hang-after-headers":
            await writer.drain()
            return await self._until_client_closes(reader, writer)
        if mode == "cut-chunked":
            writer.write(chunked(b"".join(events[:2])) + chunked(events[2][: len(events[2]) // 2]))
            await writer.drain()
            return False  # no terminating chunk: the transfer is incomplete
        if mode == "endless-line":
            writer.write(chunked(events[0] + b'data: {"choices":[{"index":0,"delta":{"content":"'))
            filler = chunked(b"a" * 65536)
            return await self._until_client_closes(reader, writer, lambda: _send(writer, filler, 0))
        try:
            if mode == "slow-bytes":
                for byte in b"".join(events):
                    await _send(writer, chunked(bytes([byte])), self.interval_s)
            else:
                pause = self.interval_s if mode == "slow-events" else 0.0
                for event in events:
                    if (mode.startswith("malformed") or mode == "error-event") and (
                        b'"abc"' in event or b'"choices":[1]' in event or b'"error"' in event
                    ):
                        await asyncio.sleep(self.fault_pause_s)
                    await _send(writer, chunked(event), pause)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self.closed_early += 1
            return False
        return True


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """A non-stream chat completion answering `body`."""
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "model": "meaningless",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "hello from the stand-in"},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def stream_events(body: dict[str, Any], count: int) -> list[bytes]:
    """SSE events of a streamed chat completion: role, `count` content pieces, finish, (usage), [DONE]."""
    base = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "model": "meaningless"}
    chunks: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]} for i in range(count)]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": count}})
    return [sse(c) for c in chunks] + [SSE_DONE]


async def _answer(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, content_type: str = "application/json", extra: str = ""
) -> None:
    writer.write(http_head(status, content_type, f"Content-Length: {len(body)}\r\n{extra}") + body)
    await writer.drain()


async def _send(writer: asyncio.StreamWriter, data: bytes, pause_s: float) -> None:
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(pause_s)
