"""The shared parts of the tests' STAND-IN servers (none of them is a real engine).

- `LoopbackUvicorn`: an ASGI app (a Starlette stand-in, or the gateway itself) under uvicorn on a free loopback
  port, in a background thread.
- `read_request`, `http_head`, `chunked`: raw HTTP/1.1 over asyncio streams, for the stand-ins that must
  misbehave below what a framework allows (tests/fault_upstream.py) or see the client leave
  (tests/standin_replay.py).
- `sse`, `SSE_DONE`: OpenAI stream events on the wire.

The stand-ins built on it: tests/standin_upstream.py (answers by `behaviour`), tests/fault_upstream.py (byte-level
faults), tests/standin_replay.py (replays a recorded output), tests/standin_qwen_coder.py (a raw Qwen3 coder),
tests/standin_engine_process.py (an engine process for the supervisor), tests/standin_vllm/ (a `vllm` package).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvicorn

from gpufleet.engine_supervisor.ports import free_port

SSE_DONE = b"data: [DONE]\n\n"
# The stand-in engine process (a script: `python standin_engine_process.py PORT [START_DELAY_S [ANSWER_DELAY_S]]`).
STANDIN_ENGINE_PROCESS = Path(__file__).with_name("standin_engine_process.py")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class LoopbackUvicorn:
    """`app` under a real uvicorn on 127.0.0.1 and a free port, in a daemon thread: `start()`, then `stop()`."""

    def __init__(self, app: Any, *, ready_timeout_s: float = 20, **uvicorn_options: Any) -> None:
        self.port = free_port()
        self.ready_timeout_s = ready_timeout_s
        options: dict[str, Any] = {"log_level": "error", "timeout_graceful_shutdown": 1, **uvicorn_options}
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **options))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LoopbackUvicorn:
        self._thread.start()
        deadline = time.monotonic() + self.ready_timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"uvicorn on port {self.port} did not start in {self.ready_timeout_s} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 15) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout_s)


@dataclass(frozen=True)
class RawRequest:
    """One HTTP/1.1 request as a raw stand-in read it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> RawRequest:
    """Read one request: its head, then the Content-Length bytes of its body.

    Raises asyncio.IncompleteReadError (or ConnectionError) when the client closes the connection first.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
    body = await reader.readexactly(int(headers.get("content-length") or 0))
    return RawRequest(method, path, headers, body)


def http_head(status: int, content_type: str, extra: str = "") -> bytes:
    """A response's status line and headers; `extra` holds more header lines, each ending in CRLF."""
    return f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n{extra}\r\n".encode()


def chunked(data: bytes) -> bytes:
    """`data` as one chunk of a chunked transfer encoding."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def sse(event: object) -> bytes:
    """One server-sent event carrying `event` as JSON."""
    return b"data: " + orjson.dumps(event) + b"\n\n"
