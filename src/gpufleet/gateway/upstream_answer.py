"""Reading an upstream's answer: the body within its size limit, JSON that the relay can use, error answers.

Each failure comes as an `AnswerFault` carrying the fallback loop's typed outcome (router/fallback.Failed):
what happened, why (the metric's reason) and whether the request had reached the upstream.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from gpufleet.errors import GpufleetError, RequestError, UpstreamError
from gpufleet.gateway.errors import is_request_fault, upstream_error_message
from gpufleet.gateway.relay import UpstreamResponse, chunk_problem
from gpufleet.router.fallback import Failed
from gpufleet.router.table import Target


class AnswerFault(Exception):
    """The target's answer cannot be used; `failed` says how (for the fallback loop)."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(str(failed.error))
        self.failed = failed


async def read_body(target: Target, response: UpstreamResponse, limit: int) -> bytes:
    """The whole body, at most `limit` bytes. A body that breaks off or times out after the headers is a
    failure after the request reached the upstream; one over `limit` is final (another target would be
    asked the same and answer as much)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for data in response.content.iter_any():
            size += len(data)
            if size > limit:
                response.close()
                error = UpstreamError(f"{target.label}'s answer exceeds {limit} bytes (server.max_upstream_body_bytes)")
                raise AnswerFault(Failed(error, "too_large", sent=True, final=True))
            parts.append(data)
    except (aiohttp.ClientError, TimeoutError) as err:
        response.close()
        timed_out = isinstance(err, TimeoutError)
        error = UpstreamError(
            f"{target.label} broke off its answer: {err or type(err).__name__}", status_code=504 if timed_out else 502
        )
        raise AnswerFault(Failed(error, "timeout" if timed_out else "disconnect", sent=True)) from None
    return b"".join(parts)


def decode_answer(target: Target, raw: bytes) -> dict[str, Any]:
    """The answer as a dict whose fields the gateway reads are well-typed; AnswerFault ('malformed') else."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _malformed(target, f"a body that is not JSON: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise _malformed(target, "JSON that is not an object")
    problem = chunk_problem(data)
    if problem is not None:
        raise _malformed(target, f"a malformed body: {problem}")
    return data


def _malformed(target: Target, what: str) -> AnswerFault:
    return AnswerFault(Failed(UpstreamError(f"{target.label} answered with {what}"), "malformed", sent=True))


def retry_after(value: str | None) -> int | None:
    """An upstream's Retry-After in whole seconds (the delta-seconds form; a date or junk gives None)."""
    if value is None or not value.strip().isdigit():
        return None
    return max(1, int(value.strip()))


def check_event_stream(target: Target, response: UpstreamResponse) -> None:
    """A stream request answered 200 with something else (an HTML page from a proxy, a JSON answer): the
    client would get an empty stream. Nothing was sent yet, so the next target may try."""
    declared = response.headers.get("Content-Type")
    if declared is not None and response.content_type != "text/event-stream":
        response.close()
        error = UpstreamError(
            f"{target.label} answered a stream request with {response.content_type}, not an event stream"
        )
        raise AnswerFault(Failed(error, "not_event_stream"))


def upstream_failure(target: Target, status: int, raw: bytes) -> GpufleetError:
    """Map an upstream's error answer: client errors keep their status and message, server errors become 502."""
    message, param, _type = upstream_error_message(status, raw)
    if is_request_fault(status, message):
        # llama.cpp's 500 about a request it could not read: the client's fault, not the engine's (issue 21).
        return RequestError(message, param=param, status_code=400, code="upstream_rejected_request")
    if 400 <= status < 500 and status not in (408, 429):
        # e.g. vLLM's "max_tokens is too large": the client's request is wrong, say so with the engine's words.
        return RequestError(message, param=param, status_code=status, code=f"upstream_{status}")
    # 501: the engine does not do this at all (llama.cpp's embeddings without --embeddings): say so, as is.
    code = status if status in (429, 501, 503) else 502
    err = UpstreamError(f"{target.label} answered HTTP {status}: {message}", status_code=code)
    err.code = f"upstream_{status}"
    return err
