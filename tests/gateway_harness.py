"""The gateway app in-process: opened with an httpx client (ASGI transport) or served by uvicorn on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from tests.standin_kit import LoopbackUvicorn

OpenGateway = Callable[[dict[str, Any]], Awaitable[httpx.AsyncClient]]


@contextlib.asynccontextmanager
async def open_gateways() -> AsyncIterator[OpenGateway]:
    """`await make(config)` → an httpx client of a running in-process gateway; all are closed on exit."""
    opened: list[tuple[Any, httpx.AsyncClient]] = []

    async def make(raw: dict[str, Any]) -> httpx.AsyncClient:
        app = build_app(parse_config(raw))
        ctx = running(app)
        await ctx.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30)
        opened.append((ctx, http))
        return http

    try:
        yield make
    finally:
        for ctx, http in reversed(opened):
            await http.aclose()
            await ctx.__aexit__(None, None, None)


def chat(model: str, **extra: Any) -> dict[str, Any]:
    """The smallest chat body for `model`."""
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@contextlib.contextmanager
def served_app(app: Any, **uvicorn_options: Any) -> Iterator[str]:
    """An ASGI app under a real uvicorn on loopback, in a thread (in-process transports report no disconnects);
    yields its base URL."""
    server = LoopbackUvicorn(app, **uvicorn_options).start()
    try:
        yield server.base_url
    finally:
        server.stop()
