"""The one place where errors become OpenAI-shaped JSON responses.

`{"error": {"message", "type", "param", "code"}}` with string `type`/`code` (OpenAI's shape; vLLM puts the
HTTP status in `code`, which clients do not expect). Every gateway-made error carries `"src": "gpufleet"`
so a user can tell it apart from an upstream's error (llama-swap #635's lesson: opaque swap errors).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from gpufleet.errors import EngineError, GpufleetError, RateLimited, UpstreamError


def error_body(message: str, *, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code, "src": "gpufleet"}}


def error_response(err: GpufleetError, *, headers: dict[str, str] | None = None) -> Response:
    """An HTTP response for any GpufleetError, with Retry-After on 503s (and on 429s that know one)."""
    hdrs = dict(headers or {})
    if isinstance(err, EngineError) and err.status_code == 503:
        hdrs["Retry-After"] = str(err.retry_after_s or 5)
    elif isinstance(err, UpstreamError) and err.status_code == 429 and err.retry_after_s:
        hdrs["Retry-After"] = str(err.retry_after_s)
    elif isinstance(err, RateLimited):
        hdrs.update(err.headers)
    body = error_body(err.message, type_=err.error_type, code=err.code, param=err.param)
    return Response(orjson.dumps(body), status_code=err.status_code, headers=hdrs, media_type="application/json")


def upstream_error_message(status: int, raw: bytes) -> tuple[str, str | None, str]:
    """Extract (message, param, type) from an upstream's error body, whatever its shape."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", errors="replace").strip()[:500]
        return (text or f"upstream answered HTTP {status}", None, "upstream_error")
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("detail") or err)
        param = err.get("param")
        type_ = err.get("type")
        return (
            message,
            param if isinstance(param, str) else None,
            type_ if isinstance(type_, str) else "upstream_error",
        )
    return (str(err)[:500], None, "upstream_error")


# What llama.cpp's server says, with HTTP 500, about a request it could not read (measured on the pinned xllamacpp:
# `"name": null` -> "Failed to parse messages: [json.exception.type_error.302] type must be string, but is null";
# an image part without a projector -> "image input is not supported - hint: ... mmproj"). The request is the
# client's fault: a 400 for them, and no failure counted against the engine (one client must not cool a route down).
_REQUEST_FAULTS_IN_500 = (
    "Failed to parse messages",
    "[json.exception.",
    "input is not supported",
    "Failed to parse input",
)


def is_request_fault(status: int, message: str) -> bool:
    """True when an upstream's 500 is about the request it was sent, not about the engine."""
    return status == 500 and any(marker in message for marker in _REQUEST_FAULTS_IN_500)
