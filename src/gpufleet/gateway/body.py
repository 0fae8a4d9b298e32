"""Reading and parsing request bodies with a size and a nesting limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from gpufleet.errors import RequestError
from gpufleet.gateway.asgi_headers import scope_header

# OpenAI bodies nest about 10 deep (a tool's parameter schema); orjson refuses to write more than 254 levels
# and jsonschema recurses once per level, so a 300-deep body made a 500 (issue 12). 64 leaves room for any
# real schema and keeps every later step far from those limits.
MAX_JSON_DEPTH = 64


async def read_json_body(request: Request, limit_bytes: int) -> Any:
    """The parsed JSON body; 413 when larger than `limit_bytes`, 400 when not JSON."""
    declared = scope_header(request.scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(int(declared), limit_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit_bytes:
                raise _too_large(size, limit_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        # Also how a body cut off by server.body_timeout_s ends (http_limits): nobody is left to answer.
        raise RequestError(
            "the client disconnected before sending the whole body", status_code=400, code="client_disconnected"
        ) from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise RequestError("the request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise RequestError(f"the request body is not valid JSON: {err}", code="invalid_json") from None
    # Nesting deeper than the limit needs more than `limit` opening brackets (in strings or not), so a body
    # with fewer (every ordinary request) skips the walk: same answer, no per-request tree traversal.
    if raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH:
        check_depth(payload, MAX_JSON_DEPTH)
    return payload


class _TooDeep(Exception):
    def __init__(self) -> None:
        self.path: list[str | int] = []


def check_depth(value: Any, limit: int) -> None:
    """RequestError (400, naming where) when `value` nests arrays/objects more than `limit` levels deep."""
    try:
        _descend(value, limit)
    except _TooDeep as deep:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(deep.path)).lstrip(".")
        raise RequestError(
            f"the request body nests more than {limit} levels deep (at {where or 'the top'})",
            param=where or None,
            code="too_deep",
        ) from None


def _descend(value: Any, budget: int) -> None:
    # Recursion is bounded by `budget` (64), far below Python's limit; the path is built only on failure.
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    if budget == 0:
        raise _TooDeep
    for key, item in items:
        if isinstance(item, dict | list):
            try:
                _descend(item, budget - 1)
            except _TooDeep as deep:
                deep.path.append(key)
                raise


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"request body is {size} bytes or more, over the limit of {limit} bytes (server.max_body_bytes)",
        status_code=413,
        code="request_too_large",
    )
