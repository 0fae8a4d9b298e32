"""The API's hot routes served without Starlette's middleware stack and router (same checks, fewer layers).

A POST to /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, /v1/messages/count_tokens or
/v1/responses goes straight to its handler after the origin guard's checks (gateway/origin_guard.py);
everything else, and every request when CORS answers are configured (`server.cors_origins`: Starlette's CORS
middleware adds their headers), takes the full stack.
Starlette's stack costs five nested calls per request and three wrappers around every `send` (each chunk of
a stream passes through them): about 6% of a non-stream request's CPU in a profile (issue 22).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gpufleet.gateway.origin_guard import OriginGuard

Handler = Callable[[Request], Awaitable[Any]]  # returns an ASGI response (Response or StreamRelayResponse)
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class GatewayApp(Starlette):
    """Starlette, with `hot` POST routes dispatched directly (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hot: dict[str, Handler] = {}
        self._guard: OriginGuard | None = None
        self._on_error: ErrorHandler | None = None

    def configure_hot_routes(
        self, hot: Mapping[str, Handler], guard: OriginGuard | None, on_error: ErrorHandler
    ) -> None:
        """Serve `hot` (path -> handler of POST) directly; `guard` None: no direct path (CORS is configured)."""
        self._hot = dict(hot) if guard is not None else {}
        self._guard = guard
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._hot.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None or self._guard is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        refusal = self._guard.refusal(scope)
        if refusal is not None:
            await self._guard.refuse(send, refusal)
            return
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except Exception as exc:  # as the stack's exception handlers would: one OpenAI-shaped error
            if self._on_error is None:
                raise
            response = await self._on_error(request, exc)
        await response(scope, receive, send)
