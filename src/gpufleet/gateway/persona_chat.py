"""`POST /chat`: the simple persona endpoint of seed 003's FastAPI wrapper, on top of the OpenAI path.

    POST /chat {"persona": "archivist", "message": "File this invoice", "history": [...]}
    → {"reply": "...", "persona": "archivist", "model": "qwen...", "finish_reason": "stop", "usage": {...}}

The persona (config `personas:`) supplies the system prompt, the model/route and its defaults; the
request goes through exactly the same route, fallback and dialect path as `/v1/chat/completions` with
`model: <persona>`. `persona` may be left out when exactly one persona is configured.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import GpufleetError, RequestError, UpstreamError
from gpufleet.gateway.admission import Ticket
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.edge import OPENAI, authorize, state_of
from gpufleet.gateway.errors import error_response
from gpufleet.gateway.pipeline import JsonReply
from gpufleet.gateway.protocol import validate_request

_PROTOCOL = OPENAI["chat"]  # answered requests count as chat requests of their model, as always
_FIELDS = {"persona", "message", "history", "max_tokens", "temperature", "thinking", "user"}
_ROLES = ("user", "assistant")


def chat_request(body: Any, personas: list[str]) -> tuple[str, dict[str, Any]]:
    """Validate a /chat body; the persona's name and the OpenAI chat request it stands for."""
    if not isinstance(body, dict):
        raise RequestError(f'the /chat body must be a JSON object like {{"message": "..."}}, got {type(body).__name__}')
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; /chat takes: {', '.join(sorted(_FIELDS))}", param=unknown[0])
    persona = body.get("persona")
    if persona is None:
        if len(personas) != 1:
            listed = ", ".join(personas) or "none configured"
            raise RequestError(f"'persona' is required (personas: {listed})", param="persona")
        persona = personas[0]
    if not isinstance(persona, str) or persona not in personas:
        raise RequestError(
            f"unknown persona {persona!r}; personas: {', '.join(personas) or 'none configured'}",
            param="persona",
            status_code=404,
            code="persona_not_found",
        )
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise RequestError("'message' must be a non-empty string", param="message")
    history = body.get("history", [])
    if not isinstance(history, list):
        raise RequestError("'history' must be a list of {role, content}", param="history")
    messages: list[dict[str, Any]] = []
    for i, turn in enumerate(history):
        if not (isinstance(turn, dict) and turn.get("role") in _ROLES and isinstance(turn.get("content"), str)):
            raise RequestError(
                f'history[{i}] must be {{"role": "user"|"assistant", "content": string}}', param=f"history[{i}]"
            )
        messages.append({"role": turn["role"], "content": turn["content"]})
    messages.append({"role": "user", "content": message})
    payload: dict[str, Any] = {"model": persona, "messages": messages}
    for key in ("max_tokens", "temperature", "thinking", "user"):
        if key in body:
            payload[key] = body[key]
    return persona, payload


async def persona_chat(request: Request) -> Response:
    state = state_of(request)
    started = time.perf_counter()
    ticket: Ticket | None = None
    try:
        principal = authorize(request)
        body = await read_json_body(request, state.config.server.max_body_bytes)
        persona, payload = chat_request(body, list(state.config.personas))
        validate_request("chat", payload)
        route = state.table.resolve(persona)
        ticket = state.admission.admit(principal, persona, (route.name, route.primary.model), "persona_chat")
        reply = await state.pipeline.reply(
            "chat", payload, route, _PROTOCOL, started=started, session=payload.get("user"), ticket=ticket
        )
        ticket.close(200)
    except GpufleetError as err:
        if ticket is not None:
            ticket.close(err.status_code)
        state.metrics.observe_error("persona", err.code)
        state.metrics.observe_request("persona", "persona_chat", err.status_code, time.perf_counter() - started)
        return error_response(err)
    except BaseException:
        if ticket is not None:
            ticket.close(500)  # a bug or a forced shutdown: the key's concurrency slot must not leak
        raise
    assert isinstance(reply, JsonReply)  # /chat requests never ask for a stream
    data = reply.data
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    if not isinstance(message.get("content"), str) and not message.get("tool_calls"):
        return error_response(UpstreamError("the model returned no text"))
    answer = {
        "reply": message.get("content") or "",
        "persona": persona,
        "model": data.get("model"),
        "finish_reason": choice.get("finish_reason"),
        "reasoning": message.get("reasoning_content"),
        "usage": data.get("usage"),
    }
    return Response(orjson.dumps(answer), media_type="application/json", headers=reply.headers)
