"""Reading and parsing request bodies with a size limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from gpufleet.errors import RequestError


async def read_json_body(request: Request, limit_bytes: int) -> Any:
    """The parsed JSON body; 413 when larger than `limit_bytes`, 400 when not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _too_large(int(declared), limit_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise _too_large(size, limit_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise RequestError("the request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise RequestError(f"the request body is not valid JSON: {err}", code="invalid_json") from None


def _too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"request body is {size} bytes or more, over the limit of {limit} bytes (server.max_body_bytes)",
        status_code=413,
        code="request_too_large",
    )
