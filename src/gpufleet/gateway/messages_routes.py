"""Anthropic Messages: `POST /v1/messages` (`?beta=true` tolerated) and `POST /v1/messages/count_tokens`.

The body is translated into chat form (protocols.messages_request) and served like any chat request; the
answer and each stream chunk are translated back. Errors are Anthropic's `{"type": "error", "error": {...}}`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import EngineError, GpufleetError, RateLimited, UpstreamError
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.edge import authenticate, gateway_of, serve_chat_form, with_headers
from gpufleet.gateway.token_count import count_prompt_tokens
from gpufleet.protocols import (
    MessagesStreamEncoder,
    chat_to_message,
    messages_error_body,
    messages_error_status,
    messages_to_chat,
)

DROPPED_HEADER = "x-gpufleet-dropped"


class MessagesProtocol:
    """Anthropic Messages at the edge: answers name the model the client asked for."""

    endpoint = "messages"

    def __init__(self, model: str, stops: list[str] | None, stream: bool) -> None:
        self.model = model
        self.stops = stops
        self.stream = stream

    def answer(self, data: dict[str, Any]) -> bytes:
        return orjson.dumps(chat_to_message(data, self.model, self.stops))

    def stream_encoder(self) -> MessagesStreamEncoder | None:
        return MessagesStreamEncoder(self.model, self.stops) if self.stream else None

    def error_response(self, err: GpufleetError) -> Response:
        return messages_error(err)


def messages_error(err: GpufleetError) -> Response:
    status = messages_error_status(err.status_code)
    headers = {}
    retry_after = err.retry_after_s if isinstance(err, EngineError | UpstreamError) else None
    if retry_after or status == 529:
        headers["retry-after"] = str(retry_after or 5)
    if isinstance(err, RateLimited):
        headers.update(err.headers)  # a team key's limit: Retry-After and the x-ratelimit-* headers
    return Response(
        orjson.dumps(messages_error_body(status, err.message)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def create_message(request: Request) -> Any:
    gateway = gateway_of(request)
    try:
        authenticate(request)
        body = await read_json_body(request, gateway.config.server.max_body_bytes)
        translated = messages_to_chat(body)
    except GpufleetError as err:
        return messages_error(err)
    stops = translated.payload.get("stop")
    protocol = MessagesProtocol(body["model"], stops, bool(translated.payload.get("stream")))
    answer = await serve_chat_form(request, "chat", translated.payload, protocol)
    headers = {DROPPED_HEADER: ",".join(translated.dropped)} if translated.dropped else {}
    return with_headers(answer, headers)


async def count_tokens(request: Request) -> Response:
    """`{"input_tokens": N}`: the engine's tokenizer where the model's engine is up, else an estimate."""
    gateway = gateway_of(request)
    try:
        authenticate(request)
        body = await read_json_body(request, gateway.config.server.max_body_bytes)
        if isinstance(body, dict):
            body = {**body, "max_tokens": 1}  # count_tokens bodies carry none: not the translator's business
        translated = messages_to_chat(body)
        count, method = await count_prompt_tokens(gateway, translated.payload)
    except GpufleetError as err:
        return messages_error(err)
    return Response(
        orjson.dumps({"input_tokens": count}), media_type="application/json", headers={"x-gpufleet-token-count": method}
    )
