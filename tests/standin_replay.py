"""A STAND-IN streaming upstream that replays a recorded model output (not a real engine).

It answers every POST with an OpenAI SSE stream of `text` cut into `chunk_chars`-character content deltas,
then `finish_reason: "stop"`, a usage chunk and `[DONE]`. It is a raw asyncio HTTP/1.1 server (no framework)
so that it sees the client's disconnect itself: before sending the delta that holds `pause_before`, it waits
(up to `pause_s`) for the client to close the connection and, when it does, stops there. `sent_chars` and
`saw_disconnect` then say how much of the output the gateway made it produce.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from tests.standin_kit import SSE_DONE, read_request, sse


class StandInReplayUpstream:
    """Replays `text` as a chat completion stream on 127.0.0.1; start with `await start()`."""

    def __init__(self, text: str, *, chunk_chars: int, pause_before: str = "</think>", pause_s: float = 10.0) -> None:
        self.text = text
        self.chunk_chars = chunk_chars
        self.pause_before = pause_before
        self.pause_s = pause_s
        self.received: list[dict[str, Any]] = []
        self.sent_chars = 0
        self.saw_disconnect = False
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> StandInReplayUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.received.append(orjson.loads((await read_request(reader)).body))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            await self._replay(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.saw_disconnect = True
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _replay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        base = {"id": "chatcmpl-replay", "object": "chat.completion.chunk", "model": "llm"}
        pause_at = self.text.find(self.pause_before) if self.pause_before else -1
        paused = False
        for start in range(0, len(self.text), self.chunk_chars):
            piece = self.text[start : start + self.chunk_chars]
            if not paused and 0 <= pause_at < start + self.chunk_chars:
                paused = True
                await writer.drain()
                if await self._client_closed(reader):
                    self.saw_disconnect = True
                    return
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            writer.write(sse(chunk))
            await writer.drain()
            self.sent_chars += len(piece)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 60, "total_tokens": 69}}
        writer.write(sse(last) + sse(usage) + SSE_DONE)
        await writer.drain()

    async def _client_closed(self, reader: asyncio.StreamReader) -> bool:
        """Wait up to `pause_s` for the client to close its side; False if it is still there."""
        try:
            return await asyncio.wait_for(reader.read(1), self.pause_s) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True
