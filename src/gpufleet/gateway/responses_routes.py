"""OpenAI Responses: `POST /v1/responses`, `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`.

The body is translated into chat form (protocols.responses_request) and served like any chat request.
`store` (default true, as OpenAI) keeps the answer in the ResponseStore so that GET and
`previous_response_id` work; `store: false` (what Codex sends) keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import GpufleetError, RequestError
from gpufleet.gateway.auth import Principal
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.edge import authenticate, gateway_of, serve_chat_form, with_headers
from gpufleet.gateway.errors import error_response
from gpufleet.gateway.messages_routes import DROPPED_HEADER
from gpufleet.gateway.response_store import ResponseStore
from gpufleet.protocols import ResponsesStreamEncoder, chat_to_response, responses_to_chat
from gpufleet.protocols.responses_answer import new_id, output_to_chat

Saver = Callable[[dict[str, Any]], None]


def response_store(request: Request) -> ResponseStore:
    """The app's store, opened on first use (under the cache dir unless a test put another on app.state)."""
    state = request.app.state
    store: ResponseStore | None = getattr(state, "response_store", None)
    if store is None:
        store = state.response_store = ResponseStore()
    return store


class ResponsesProtocol:
    """OpenAI Responses at the edge; `save` (when storing) gets each finished response object."""

    endpoint = "responses"

    def __init__(self, request: dict[str, Any], model: str, save: Saver | None) -> None:
        self.request = request
        self.model = model
        self.save = save
        self.response_id = new_id("resp")

    def answer(self, data: dict[str, Any]) -> bytes:
        response = chat_to_response(data, self.request, self.model, self.response_id)
        if self.save is not None:
            self.save(response)
        return orjson.dumps(response)

    def stream_encoder(self) -> ResponsesStreamEncoder | None:
        if not self.request.get("stream"):
            return None
        return ResponsesStreamEncoder(self.request, self.model, self.response_id, on_complete=self.save)

    def error_response(self, err: GpufleetError) -> Response:
        return error_response(err)


def _saver(store: ResponseStore, history: list[dict[str, Any]], owner: str) -> Saver:
    def save(response: dict[str, Any]) -> None:
        store.put(response["id"], response, [*history, output_to_chat(response["output"])], owner=owner)

    return save


def _owner(principal: Principal) -> str | None:
    """Whose stored responses a caller reads: a key's own (by its name); an admin key reads any (None)."""
    return None if principal.admin else principal.name


async def create_response(request: Request) -> Any:
    gateway = gateway_of(request)
    try:
        principal = authenticate(request)
        body = await read_json_body(request, gateway.config.server.max_body_bytes)
        history = _previous(request, body, _owner(principal))
        translated = responses_to_chat(body, history)
    except GpufleetError as err:
        return error_response(err)
    save = (
        _saver(response_store(request), translated.history, principal.name)
        if body.get("store", True) is not False
        else None
    )
    protocol = ResponsesProtocol(body, body["model"], save)
    answer = await serve_chat_form(request, "chat", translated.payload, protocol)
    headers = {DROPPED_HEADER: ",".join(translated.dropped)} if translated.dropped else {}
    return with_headers(answer, headers)


def _previous(request: Request, body: Any, owner: str | None) -> list[dict[str, Any]] | None:
    previous = body.get("previous_response_id") if isinstance(body, dict) else None
    if previous is None:
        return None
    if not isinstance(previous, str):
        raise RequestError("previous_response_id must be a string", param="previous_response_id")
    stored = response_store(request).get(previous, owner=owner)
    if stored is None:
        raise RequestError(
            f"previous response {previous!r} not found (never stored, store: false, or expired)",
            param="previous_response_id",
            status_code=404,
            code="previous_response_not_found",
        )
    return stored[1]


async def get_response(request: Request) -> Response:
    try:
        owner = _owner(authenticate(request))
        stored = response_store(request).get(request.path_params["response_id"], owner=owner)
        if stored is None:
            raise RequestError(
                f"response {request.path_params['response_id']!r} not found", status_code=404, code="not_found"
            )
    except GpufleetError as err:
        return error_response(err)
    return Response(orjson.dumps(stored[0]), media_type="application/json")


async def delete_response(request: Request) -> Response:
    response_id = request.path_params["response_id"]
    try:
        owner = _owner(authenticate(request))
        if not response_store(request).delete(response_id, owner=owner):
            raise RequestError(f"response {response_id!r} not found", status_code=404, code="not_found")
    except GpufleetError as err:
        return error_response(err)
    return Response(
        orjson.dumps({"id": response_id, "object": "response", "deleted": True}), media_type="application/json"
    )
