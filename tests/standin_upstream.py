"""A STAND-IN OpenAI-compatible upstream for tests (not a real engine).

It records the bodies it receives and answers according to the `behaviour` the test sets: a normal
answer (echoing what it received), an HTTP error, or a stream — or a fault for the router's tests:
"500", "429", "hang" (never answers), "hang-stream" (200, then silence), "die-mid-stream". Real engines
are exercised elsewhere (the embedded llama.cpp engine and vLLM's CPU build).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any, Self

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.standin_kit import SSE_DONE, LoopbackUvicorn, sse


class StandInUpstream:
    """Runs the stand-in on a free port in a background thread."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.behaviour = "ok"
        self.stream_chunks = 5
        self.delay_s = 0.0  # before answering (keeps requests in flight for load-balancing tests)
        self.models_status = 200  # what GET /v1/models (the router's health probe) answers
        # /v1/embeddings: one vector per input, from the words in it; `embed_gate` (when set) holds answers back
        self.embed_words: tuple[str, ...] = ("hello", "function", "prove")
        self.embed_gate: threading.Event | None = None
        self.reply: str | None = None  # chat: answer this content instead of the echo
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", lambda r: Response(b"{}"), methods=["GET"]),
            ]
        )
        # "hang" handlers never finish: the kit's server does not wait for them at stop (timeout_graceful_shutdown).
        self._server = LoopbackUvicorn(app, ready_timeout_s=10, lifespan="off")
        self.port = self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout_s=10)

    async def _models(self, request: Request) -> Response:
        return Response(b'{"object":"list","data":[]}', status_code=self.models_status, media_type="application/json")

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.received.append(body)
        self.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.behaviour == "hang":
            await _sleep_until_stopped()
        if self.behaviour == "429":
            err = {"error": {"message": "rate limited", "type": "rate_limit_error", "code": 429}}
            return Response(orjson.dumps(err), status_code=429, media_type="application/json")
        if self.behaviour == "hang-stream" and body.get("stream"):
            return StreamingResponse(self._silence(), media_type="text/event-stream")
        if self.behaviour == "400":
            err = {
                "error": {
                    "message": "max_tokens is too large",
                    "type": "BadRequestError",
                    "param": "max_tokens",
                    "code": 400,
                }
            }
            return Response(orjson.dumps(err), status_code=400, media_type="application/json")
        if self.behaviour == "500":
            return Response(b"Internal Server Error", status_code=500)
        if self.behaviour == "not-json":
            return Response(b"<html>oops</html>", status_code=200)
        if body.get("stream"):
            return StreamingResponse(self._stream(body), media_type="text/event-stream")
        answer = {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "model": "meaningless",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": self.reply or "echo: " + orjson.dumps(body).decode()},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _embeddings(self, request: Request) -> Response:
        """A bag of `embed_words` (plus a constant so no vector is zero); faults as for chat."""
        body = orjson.loads(await request.body())
        self.received.append(body)
        if self.behaviour == "hang":
            await _sleep_until_stopped()
        if self.behaviour == "500":
            return Response(b"Internal Server Error", status_code=500)
        while self.embed_gate is not None and not self.embed_gate.is_set():
            await asyncio.sleep(0.01)  # set from the test's thread: poll it
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [0.1, *(float(word in str(text).lower()) for word in self.embed_words)],
            }
            for i, text in enumerate(inputs)
        ]
        return Response(
            orjson.dumps({"object": "list", "data": data, "model": "meaningless"}), media_type="application/json"
        )

    async def _silence(self) -> AsyncIterator[bytes]:
        await _sleep_until_stopped()
        yield b""

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": "meaningless"}
        for i in range(self.stream_chunks):
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}]}
            yield sse(chunk)
            if self.behaviour == "die-mid-stream" and i == 1:
                raise RuntimeError("stand-in upstream dies mid-stream")
            await asyncio.sleep(0.001)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield sse(last)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
            yield sse(usage)
        yield SSE_DONE


async def _sleep_until_stopped() -> None:
    """Hang (a fault to inject); the server's shutdown cancels it, which is no error worth logging."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)
