"""Admin endpoints for team keys and the usage ledger (the console's usage panel; `gpufleet keys` over HTTP).

Admin keys (server.api_keys) only; a team key gets 403.

    GET  /admin/usage?since=7d&by=key,model      → {"since", "by", "rows": [{key, model, requests, ...}]}
    GET  /admin/keys                              → {"keys": [{name, state, hint, models, rpm, ...}]}
    POST /admin/keys {"name": "alice", "models": ["qwen*"], "rpm": 60, "expires": "30d"}
                                                  → 201 {"key": "gfk-...", ...}   (the only time the key is shown)
    POST /admin/keys/{name}/revoke                → {"name", "state": "revoked", ...}
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.errors import ConfigError, GpufleetError, RequestError
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.errors import error_response
from gpufleet.limits import Limits
from gpufleet.store import KeyRecord, new_secret, parse_duration
from gpufleet.store.keys import check_name

if TYPE_CHECKING:
    from gpufleet.gateway.state import Gateway

_JSON = "application/json"


class KeyRequest(BaseModel):
    """The body of POST /admin/keys (the options of `gpufleet keys create`)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    expires: str | None = None


def _admin(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    gateway.keys.check_admin(request.headers.get("authorization"))
    return gateway


def _client_error(err: ConfigError) -> RequestError:
    return RequestError(err.reason, param=err.key_path)


async def usage(request: Request) -> Response:
    """Totals from the ledger since `since` (default 7d), grouped by `by` (default key)."""
    try:
        gateway = _admin(request)
        groups = [g.strip() for g in request.query_params.get("by", "key").split(",") if g.strip()]
        try:
            since = time.time() - parse_duration(request.query_params.get("since", "7d"), option="since")
            await gateway.admission.writer.flush()  # the answer includes the rows still queued
            rows = await gateway.admission.writer.query(since, groups)
        except ConfigError as err:  # a bad `since` or `by`: the client's mistake
            raise _client_error(err) from None
    except GpufleetError as err:
        return error_response(err)
    return Response(orjson.dumps({"since": since, "by": groups, "rows": rows}), media_type=_JSON)


async def list_keys(request: Request) -> Response:
    """Every team key, revoked and expired ones included (their state says which)."""
    try:
        gateway = _admin(request)
        records = await gateway.admission.writer.call(gateway.admission.writer.store.key_records)
    except GpufleetError as err:
        return error_response(err)
    now = time.time()
    return Response(orjson.dumps({"keys": [r.public(now) for r in records]}), media_type=_JSON)


async def create_key(request: Request) -> Response:
    """Make a key; the answer is the only place it is ever shown."""
    try:
        gateway = _admin(request)
        body = await read_json_body(request, 64 * 1024)
        try:
            spec = KeyRequest.model_validate(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise RequestError(f"{where}: {first['msg']}", param=where) from None
        try:
            check_name(spec.name, option="name")
            expires_in_s = parse_duration(spec.expires, option="expires") if spec.expires else None
            secret = new_secret()
            record = KeyRecord.create(
                name=spec.name,
                secret=secret,
                models=tuple(m.strip() for m in spec.models if m.strip()),
                limits=Limits(
                    rpm=spec.rpm, tpm=spec.tpm, tokens_per_day=spec.tokens_per_day, max_concurrency=spec.max_concurrency
                ),
                expires_in_s=expires_in_s,
            )
        except ConfigError as err:
            raise _client_error(err) from None
        await gateway.admission.writer.call(gateway.admission.writer.store.add_key, record)
        await gateway.admission.writer.refresh_now()
    except GpufleetError as err:
        return error_response(_conflict(err))
    body = {"key": secret, **record.public(time.time())}
    return Response(orjson.dumps(body), status_code=201, media_type=_JSON, headers={"Cache-Control": "no-store"})


async def revoke_key(request: Request) -> Response:
    """Revoke a key by name (or id); this gateway refuses it at once, the others within 5 s."""
    try:
        gateway = _admin(request)
        record = await gateway.admission.writer.call(
            gateway.admission.writer.store.revoke, request.path_params["name"], time.time()
        )
        await gateway.admission.writer.refresh_now()
    except GpufleetError as err:
        return error_response(_conflict(err))
    return Response(orjson.dumps(record.public(time.time())), media_type=_JSON)


def _conflict(err: GpufleetError) -> GpufleetError:
    """A store refusal about the request itself (name taken, no such key) is the client's: 409 / 404."""
    message = err.message
    if "live key named" in message and "exists" in message:
        return RequestError(message, param="name", status_code=409, code="key_name_taken")
    if "no live key named" in message:
        return RequestError(message, status_code=404, code="key_not_found")
    return err
