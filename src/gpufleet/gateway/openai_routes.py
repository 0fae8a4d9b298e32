"""The OpenAI endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Their bodies are already the internal form: each handler checks the key, reads the body and hands it to
the protocol edge (gateway/edge.py) with the OpenAI protocol of its kind.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import GpufleetError
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.edge import OPENAI, Kind, authorize, serve_chat_form, state_of
from gpufleet.gateway.errors import error_response
from gpufleet.gateway.relay import StreamRelayResponse

Answer = Response | StreamRelayResponse  # a JSON answer, or a relayed SSE stream (an ASGI app of its own)


async def chat_completions(request: Request) -> Answer:
    return await _serve(request, "chat")


async def completions(request: Request) -> Answer:
    return await _serve(request, "completion")


async def embeddings(request: Request) -> Answer:
    return await _serve(request, "embedding")


async def list_models(request: Request) -> Response:
    try:
        principal = authorize(request)
    except GpufleetError as err:
        return error_response(err)
    listing = state_of(request).table.listing()
    if principal.key is not None:  # a team key sees only its models
        listing = [
            entry
            for entry in listing
            if principal.allows(entry["id"], entry.get("alias_of", ""), entry.get("persona_of", ""))
        ]
    body = {"object": "list", "data": listing}
    return Response(orjson.dumps(body), media_type="application/json")


async def _serve(request: Request, kind: Kind) -> Answer:
    protocol = OPENAI[kind]
    try:
        authorize(request)  # before reading a body of up to server.max_body_bytes
        payload = await read_json_body(request, state_of(request).config.server.max_body_bytes)
    except GpufleetError as err:
        return await serve_error(request, kind, err)
    return await serve_chat_form(request, kind, payload, protocol)


async def serve_error(request: Request, kind: Kind, err: GpufleetError) -> Response:
    """An error before the edge took the request (auth, body), counted as the edge counts its own."""
    metrics = state_of(request).metrics
    metrics.observe_error("unknown", err.code)
    metrics.observe_request("unknown", OPENAI[kind].endpoint, err.status_code, 0.0)
    return OPENAI[kind].error_response(err)
