"""A minimal, fixed-response OpenAI-compatible upstream for gateway benchmarks.

It answers instantly with canned bytes so that whatever sits in front of it (gpufleet,
LiteLLM) is the thing being measured, not the model server:

- ``POST /v1/chat/completions`` (and ``/v1/completions``): a fixed ``chat.completion``
  JSON, or with ``"stream": true`` a fixed sequence of SSE chunks then ``data: [DONE]``;
  ``stream_options.include_usage`` adds the final usage chunk, as OpenAI does.
- ``GET /v1/models``, ``GET /health``.

Written on a raw asyncio ``Protocol`` with uvloop and httptools (no ASGI framework): on
one core it serves tens of thousands of requests per second, far above any Python
gateway, so it is never the bottleneck.

Usage::

    .venv/bin/python benchmarks/fixed_upstream.py --port 9100 [--chunks 16] [--chunk-interval-ms 12]

``--chunk-interval-ms`` paces the stream like an engine decoding (12 ms ≈ 80 tokens/s), to
measure a relay's CPU cost per token at realistic rates rather than at full speed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import cast

import httptools
import orjson
import uvloop

CONTENT = "The quick brown fox jumps over the lazy dog."
MODEL = "fixed-upstream"


@dataclass(frozen=True)
class CannedReplies:
    """Every response body the upstream can send, encoded once at startup."""

    completion: bytes
    stream_chunks: tuple[bytes, ...]
    usage_chunk: bytes
    models: bytes
    health: bytes
    not_found: bytes


def _sse(obj: object) -> bytes:
    """One SSE event, framed as one HTTP/1.1 chunk (so each event is its own chunk)."""
    payload = b"data: " + orjson.dumps(obj) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def build_replies(n_chunks: int) -> CannedReplies:
    """Encode the fixed bodies: a completion, ``n_chunks`` stream deltas, usage, models."""
    created = int(time.time())
    usage = {"prompt_tokens": 12, "completion_tokens": n_chunks, "total_tokens": 12 + n_chunks}
    completion = {
        "id": "chatcmpl-fixed",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CONTENT},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }
    words = CONTENT.split(" ")
    chunks: list[bytes] = []
    for i in range(n_chunks):
        delta: dict[str, str] = {"content": words[i % len(words)] + " "}
        if i == 0:
            delta["role"] = "assistant"
        last = i == n_chunks - 1
        chunks.append(
            _sse(
                {
                    "id": "chatcmpl-fixed",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "delta": delta,
                            "logprobs": None,
                            "finish_reason": "stop" if last else None,
                        }
                    ],
                }
            )
        )
    usage_chunk = _sse(
        {
            "id": "chatcmpl-fixed",
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL,
            "choices": [],
            "usage": usage,
        }
    )
    models = {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": created, "owned_by": "bench"}],
    }
    not_found = {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": "404"}}
    return CannedReplies(
        completion=orjson.dumps(completion),
        stream_chunks=tuple(chunks),
        usage_chunk=usage_chunk,
        models=orjson.dumps(models),
        health=b'{"status":"ok"}',
        not_found=orjson.dumps(not_found),
    )


def _head(status: bytes, content_type: bytes, length: int | None, keep_alive: bool) -> bytes:
    """Status line and headers; ``length=None`` means chunked transfer encoding."""
    framing = b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    conn = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\n%s%s\r\n" % (status, content_type, framing, conn)


def _wants_stream(body: bytes) -> tuple[bool, bool]:
    """(stream, include_usage) from a request body; a body that isn't JSON is non-stream."""
    if b'"stream"' not in body:  # fast path: most non-stream bodies never mention it
        return False, False
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, False
    if not isinstance(req, dict) or req.get("stream") is not True:
        return False, False
    opts = req.get("stream_options")
    return True, isinstance(opts, dict) and opts.get("include_usage") is True


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection, parsed by httptools, answered from ``CannedReplies``."""

    def __init__(self, replies: CannedReplies, interval_s: float) -> None:
        self._replies = replies
        self._interval_s = interval_s
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport quacks like asyncio.Transport but does not subclass it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_head(b"400 Bad Request", b"text/plain", 0, False))
                self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = self._parser.should_keep_alive()
        paced = self._respond(transport, self._parser.get_method(), self._url.split(b"?", 1)[0], keep_alive)
        if not keep_alive and not paced:
            transport.close()

    def _respond(self, transport: asyncio.Transport, method: bytes, path: bytes, keep_alive: bool) -> bool:
        """Write the answer; True when a paced stream is still being written (it closes itself)."""
        r = self._replies
        if method == b"POST" and path in (b"/v1/chat/completions", b"/v1/completions"):
            stream, include_usage = _wants_stream(b"".join(self._body))
            if not stream:
                transport.write(_head(b"200 OK", b"application/json", len(r.completion), keep_alive) + r.completion)
                return False
            transport.write(_head(b"200 OK", b"text/event-stream", None, keep_alive))
            pieces = [*r.stream_chunks, *((r.usage_chunk,) if include_usage else ()), _DONE_AND_END]
            if self._interval_s > 0:
                _write_paced(transport, pieces, self._interval_s, close_after=not keep_alive)
                return True
            for piece in pieces:  # one write per SSE event, like an engine emitting tokens one by one
                transport.write(piece)
        elif method == b"GET" and path == b"/v1/models":
            transport.write(_head(b"200 OK", b"application/json", len(r.models), keep_alive) + r.models)
        elif method == b"GET" and path == b"/health":
            transport.write(_head(b"200 OK", b"application/json", len(r.health), keep_alive) + r.health)
        else:
            transport.write(_head(b"404 Not Found", b"application/json", len(r.not_found), keep_alive) + r.not_found)
        return False


_DONE_AND_END = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"  # last SSE event, then the chunked terminator


def _write_paced(transport: asyncio.Transport, pieces: list[bytes], interval_s: float, close_after: bool) -> None:
    """Write one piece now and the rest every ``interval_s``, like an engine decoding tokens."""
    if transport.is_closing():
        return
    transport.write(pieces[0])
    if len(pieces) > 1:
        asyncio.get_running_loop().call_later(interval_s, _write_paced, transport, pieces[1:], interval_s, close_after)
    elif close_after:
        transport.close()


async def serve(host: str, port: int, n_chunks: int, interval_s: float) -> None:
    """Serve forever on ``host:port``."""
    replies = build_replies(n_chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(replies, interval_s), host, port, backlog=4096)
    pace = f", one every {interval_s * 1e3:g} ms" if interval_s > 0 else ""
    print(f"fixed upstream on http://{host}:{port} ({n_chunks} stream chunks{pace})", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Parse the command line and run the server."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per stream (default 16)")
    ap.add_argument(
        "--chunk-interval-ms", type=float, default=0.0, help="pace stream chunks like a decoding engine (default 0)"
    )
    args = ap.parse_args()
    uvloop.run(serve(args.host, args.port, args.chunks, args.chunk_interval_ms / 1e3))


if __name__ == "__main__":
    main()
