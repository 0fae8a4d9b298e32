"""The OpenAI endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gpufleet.dialects import (
    StreamTransformer,
    prepare_request,
    retry_body,
    transform_response,
    validate_structured,
)
from gpufleet.dialects.plan import ResponsePlan
from gpufleet.errors import GpufleetError, RequestError, UpstreamError
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.errors import error_response, upstream_error_message
from gpufleet.gateway.protocol import validate_request
from gpufleet.gateway.relay import SSERewriter, StreamRelayResponse, StreamStats
from gpufleet.router import Target

if TYPE_CHECKING:
    from gpufleet.gateway.app import Gateway

_UPSTREAM_PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}
_JSON = "application/json"


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def chat_completions(request: Request) -> Any:
    return await _relay(request, "chat")


async def completions(request: Request) -> Any:
    return await _relay(request, "completion")


async def embeddings(request: Request) -> Any:
    return await _relay(request, "embedding")


async def list_models(request: Request) -> Response:
    gateway = _gateway(request)
    try:
        gateway.keys.check(request.headers.get("authorization"))
    except GpufleetError as err:
        return error_response(err)
    body = {"object": "list", "data": gateway.table.listing()}
    return Response(orjson.dumps(body), media_type=_JSON)


async def _relay(request: Request, kind: str) -> Any:
    gateway = _gateway(request)
    started = time.perf_counter()
    model = "unknown"  # never the raw requested name as a label: unbounded cardinality
    try:
        gateway.keys.check(request.headers.get("authorization"))
        payload = await read_json_body(request, gateway.config.server.max_body_bytes)
        validate_request(kind, payload)
        target = gateway.table.resolve(payload["model"])
        model = target.model
        return await _forward(gateway, kind, payload, target, started)
    except GpufleetError as err:
        gateway.metrics.observe_error(model, err.code)
        gateway.metrics.observe_request(model, kind, err.status_code, time.perf_counter() - started)
        return error_response(err)


async def _forward(gateway: Gateway, kind: str, payload: dict[str, Any], target: Target, started: float) -> Any:
    stack = contextlib.AsyncExitStack()
    await stack.__aenter__()
    metrics = gateway.metrics
    metrics.track_in_flight(target.model, 1)
    stack.callback(metrics.track_in_flight, target.model, -1)
    try:
        if target.remote is None:
            upstream = await stack.enter_async_context(gateway.supervisor.lease(target.model))
            base_url, api_key, timeout_s = upstream.base_url, upstream.api_key, None
        else:
            base_url, api_key = target.remote.base_url, target.remote.api_key
            timeout_s = target.remote.timeout_s
        plan: ResponsePlan | None = None
        if kind in ("chat", "completion"):
            prepared = prepare_request(payload, kind=kind, defaults=gateway.dialects[target.model])
            body, plan = dict(prepared.body), prepared.plan
        else:
            body = dict(payload)
        body["model"] = target.upstream_model
        stream = bool(payload.get("stream"))
        client_options = payload.get("stream_options") or {}
        wants_usage = bool(client_options.get("include_usage"))
        if stream:
            # Always ask for usage so token metrics are exact; the usage chunk is dropped unless the client asked.
            body["stream_options"] = {**client_options, "include_usage": True}
        response = await gateway.client.post(
            base_url + _UPSTREAM_PATHS[kind], orjson.dumps(body), api_key=api_key, timeout_s=timeout_s
        )
        headers = {"x-gpufleet-model": target.model, "x-gpufleet-target": target.label}
        if response.status != 200:
            raw = await response.read()
            response.release()
            raise _upstream_failure(target, response.status, raw)
        if not stream:
            raw = await response.read()
            response.release()
            data = _decode_upstream_json(target, raw)
            if plan is not None:
                data = await _apply_dialect(gateway, data, body, plan, target, base_url + _UPSTREAM_PATHS[kind],
                                            api_key, timeout_s)
            data["model"] = target.model
            usage = data.get("usage")
            if isinstance(usage, dict):
                metrics.observe_tokens(
                    target.model, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                )
            await stack.aclose()
            metrics.observe_request(target.model, kind, 200, time.perf_counter() - started)
            return Response(orjson.dumps(data), media_type=_JSON, headers=headers)
    except BaseException:
        await stack.aclose()
        raise

    rewriter = SSERewriter(served_model=target.model, client_wants_usage=wants_usage, stats=StreamStats(started))
    if plan is not None:
        transformer = StreamTransformer(plan)
        rewriter.transform, rewriter.flush = transformer.feed, transformer.finish

    async def on_close(stats: StreamStats, disconnected: bool) -> None:
        await stack.aclose()
        elapsed = time.perf_counter() - stats.started
        status = 499 if disconnected else (502 if stats.error else 200)
        metrics.observe_request(target.model, kind, status, elapsed)
        if stats.first_token_at is not None:
            metrics.observe_ttft(target.model, stats.first_token_at - stats.started)
        metrics.observe_tokens(target.model, stats.prompt_tokens, stats.completion_tokens)
        if disconnected:
            metrics.observe_error(target.model, "client_disconnected")
        elif stats.error:
            metrics.observe_error(target.model, "upstream_stream_error")

    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    return StreamRelayResponse(response, rewriter, headers=raw_headers, on_close=on_close)


async def _apply_dialect(
    gateway: Gateway, data: dict[str, Any], body: dict[str, Any], plan: ResponsePlan, target: Target, url: str,
    api_key: str | None, timeout_s: float | None,
) -> dict[str, Any]:
    """Split reasoning / parse tool calls; validate structured output and re-ask once when it is invalid."""
    data = transform_response(data, plan)
    problem = validate_structured(data, plan)
    if problem is None:
        return data
    retry = dict(retry_body(body, data, problem))
    response = await gateway.client.post(url, orjson.dumps(retry), api_key=api_key, timeout_s=timeout_s)
    raw = await response.read()
    response.release()
    if response.status != 200:
        raise _upstream_failure(target, response.status, raw)
    second = transform_response(_decode_upstream_json(target, raw), plan)
    still = validate_structured(second, plan)
    if still is not None:
        err = UpstreamError(f"{target.label}: the model's output does not match response_format after one retry: "
                            f"{still}", status_code=502, retryable=False)
        err.code = "structured_output_invalid"
        raise err
    return second


def _decode_upstream_json(target: Target, raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"{target.label} answered with a body that is not JSON: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise UpstreamError(f"{target.label} answered with JSON that is not an object")
    return data


def _upstream_failure(target: Target, status: int, raw: bytes) -> GpufleetError:
    """Map an upstream's error answer: client errors keep their status and message, server errors become 502."""
    message, param, _type = upstream_error_message(status, raw)
    if 400 <= status < 500 and status not in (408, 429):
        # e.g. vLLM's "max_tokens is too large": the client's request is wrong, say so with the engine's words.
        return RequestError(message, param=param, status_code=status, code=f"upstream_{status}")
    code = 429 if status == 429 else (503 if status == 503 else 502)
    err = UpstreamError(f"{target.label} answered HTTP {status}: {message}", status_code=code)
    err.code = f"upstream_{status}"
    return err
