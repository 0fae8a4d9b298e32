"""The OpenAI endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
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
from gpufleet.errors import EngineError, EngineNotReady, GpufleetError, RequestError, UpstreamError
from gpufleet.gateway.body import read_json_body
from gpufleet.gateway.errors import error_response, upstream_error_message
from gpufleet.gateway.http_limits import disconnect_watch
from gpufleet.gateway.protocol import validate_request
from gpufleet.gateway.relay import SSERewriter, StreamRelayResponse, StreamStats, chunk_problem, reasoning_tokens
from gpufleet.router import Target
from gpufleet.router.defaults import apply_request_defaults
from gpufleet.router.select import session_key
from gpufleet.router.table import Candidate, Route

if TYPE_CHECKING:
    from gpufleet.gateway.admission import Ticket
    from gpufleet.gateway.app import Gateway

log = logging.getLogger("gpufleet.gateway")

Kind = Literal["chat", "completion", "embedding"]
Answer = Response | StreamRelayResponse  # a JSON answer, or a relayed SSE stream (an ASGI app of its own)

_UPSTREAM_PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}
_JSON = "application/json"


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def chat_completions(request: Request) -> Answer:
    return await _relay(request, "chat")


async def completions(request: Request) -> Answer:
    return await _relay(request, "completion")


async def embeddings(request: Request) -> Answer:
    return await _relay(request, "embedding")


async def list_models(request: Request) -> Response:
    gateway = _gateway(request)
    try:
        principal = gateway.keys.check(request.headers.get("authorization"))
    except GpufleetError as err:
        return error_response(err)
    listing = gateway.table.listing()
    if principal.key is not None:  # a team key sees only its models
        listing = [entry for entry in listing
                   if principal.allows(entry["id"], entry.get("alias_of", ""), entry.get("persona_of", ""))]
    body = {"object": "list", "data": listing}
    return Response(orjson.dumps(body), media_type=_JSON)


async def _relay(request: Request, kind: Kind) -> Answer:
    gateway = _gateway(request)
    started = time.perf_counter()
    model = "unknown"  # never the raw requested name as a label: unbounded cardinality
    ticket: Ticket | None = None
    try:
        principal = gateway.keys.check(request.headers.get("authorization"))
        payload = await read_json_body(request, gateway.config.server.max_body_bytes)
        validate_request(kind, payload)
        if gateway.auto_model is not None and payload["model"] == "auto":
            route = await gateway.auto_model.route(payload)  # a model classifier; the rules when it cannot
        else:
            route = gateway.table.resolve(payload["model"], payload)
        model = route.primary.model
        ticket = gateway.admission.admit(principal, payload["model"], (route.name, model), kind)  # 403, 429
        if route.tier is not None:
            gateway.router_metrics.observe_tier(route.tier)
        session = session_key(request.headers.get("x-gpufleet-session"), payload) if route.affinity else None
        work = asyncio.ensure_future(serve_route(gateway, kind, payload, route, started, session=session,
                                                 ticket=ticket))
        if not await _finished_before_disconnect(request, work):
            # The client left before the answer (or a stream's first byte): cancelling closes the upstream
            # connection, which tells the engine to stop generating, as for a stream the client leaves.
            gateway.metrics.observe_error(model, "client_disconnected")
            gateway.metrics.observe_request(model, kind, 499, time.perf_counter() - started)
            ticket.close(499)
            return Response(status_code=499)
        answer = work.result()
        if not isinstance(answer, StreamRelayResponse):
            ticket.close(answer.status_code)  # a stream's ticket closes when the stream ends
        return answer
    except GpufleetError as err:
        if ticket is not None:
            ticket.close(err.status_code)
        gateway.metrics.observe_error(model, err.code)
        gateway.metrics.observe_request(model, kind, err.status_code, time.perf_counter() - started)
        return error_response(err)
    except BaseException:
        if ticket is not None:
            ticket.close(500)  # a bug or a forced shutdown: the key's concurrency slot must not leak
        raise


async def _finished_before_disconnect(request: Request, work: asyncio.Future[Answer]) -> bool:
    """Wait for `work`; False (and `work` cancelled) when the client disconnects first."""
    watch = disconnect_watch(request.scope)
    if watch is None:
        return await _finished_before_receive_says_disconnect(request, work)
    # The gateway's own protocol calls back when the connection is lost: no second task per request.
    watch.watch(work.cancel)
    try:
        await work
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not watch.lost or (current is not None and current.cancelling()):
            raise  # the handler itself is cancelled (e.g. a forced shutdown): awaiting cancelled `work` too
        return False
    except GpufleetError:
        pass  # the caller's work.result() raises it
    finally:
        watch.watch(None)
    return True


async def _finished_before_receive_says_disconnect(request: Request, work: asyncio.Future[Answer]) -> bool:
    """`_finished_before_disconnect` under another ASGI server: a second task waits on `receive()`."""

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher: asyncio.Future[Any] = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait([work, watcher], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()  # the handler itself is cancelled (e.g. a forced shutdown): the upstream request too
        raise
    finally:
        watcher.cancel()
    if work.done():
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, GpufleetError):
        await work
    return False


class _TargetFault(Exception):
    """This target failed after the request reached it: it counts against the target, but is not retried
    elsewhere (the upstream may have run it) and the client gets the error."""

    def __init__(self, error: GpufleetError) -> None:
        super().__init__(str(error))
        self.error = error


class _TryNext(Exception):
    """This target failed before anything reached the client: the next one may serve the request."""

    def __init__(self, error: GpufleetError, reason: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.reason = reason


async def serve_route(
    gateway: Gateway, kind: Kind, payload: dict[str, Any], route: Route, started: float, *, session: str | None,
    ticket: Ticket | None = None,
) -> Answer:
    """Try the route's targets in order until one starts answering; raise the last failure when none does.

    A target is abandoned only while nothing was sent to the client: connection refused, timeout before the
    first byte, HTTP 5xx (but 501) or 429, an engine that cannot start. Once the request reached the
    upstream (a connection dropped after it was sent, a body cut or malformed), the failure counts against
    the target but is not retried: the upstream may have run it. After the first byte, a broken stream ends
    with an OpenAI error event instead (relay.StreamRelayResponse).
    """
    settings = gateway.config.router
    candidates = gateway.selector.order(route, session=session, max_attempts=settings.max_attempts)
    failures: list[str] = []
    last: _TryNext | None = None
    for attempt, candidate in enumerate(candidates):
        if last is not None:
            previous = candidates[attempt - 1].target
            gateway.router_metrics.observe_fallback(route.name, previous.model, last.reason)
            log.warning("%s: %s failed (%s); trying %s", route.name, previous.label, last.error,
                        candidate.target.label)
            if settings.retry_backoff_s:
                await asyncio.sleep(settings.retry_backoff_s * 2 ** (attempt - 1))
        try:
            return await _forward(gateway, kind, payload, route, candidate, started, ticket)
        except _TryNext as err:
            gateway.router.failure(candidate.target, str(err.error))
            failures.append(f"{candidate.target.label}: {err.error.message}")  # message: no engine log
            last = err
        except _TargetFault as fault:
            gateway.router.failure(candidate.target, str(fault.error))
            raise fault.error from None
    assert last is not None
    error = last.error
    if isinstance(error, UpstreamError) and error.status_code == 429 and not error.retry_after_s:
        error.retry_after_s = gateway.router.retry_after_s([c.target for c in candidates])
    if len(failures) == 1:
        raise error
    summary = f"every target of {route.name!r} failed: " + "; ".join(failures)
    if isinstance(error, EngineError):
        raise EngineNotReady(summary, retry_after_s=error.retry_after_s)
    exhausted = UpstreamError(summary, status_code=error.status_code if error.status_code in (429, 503, 504) else 502)
    exhausted.code = error.code
    if isinstance(error, UpstreamError):
        exhausted.retry_after_s = error.retry_after_s
    raise exhausted


def _upstream_body(
    kind: Kind, payload: dict[str, Any], candidate: Candidate
) -> tuple[dict[str, Any], ResponsePlan | None]:
    """The body for this target (route defaults, dialect, the upstream's model name) and the response plan."""
    target = candidate.target
    if candidate.has_defaults:
        payload = apply_request_defaults(payload, candidate.defaults, kind=kind)
    plan: ResponsePlan | None = None
    if kind in ("chat", "completion"):
        prepared = prepare_request(payload, kind=kind, defaults=candidate.dialect)
        body, plan = dict(prepared.body), prepared.plan
    else:
        body = dict(payload)
    body["model"] = target.upstream_model
    return body, plan


async def _forward(
    gateway: Gateway, kind: Kind, payload: dict[str, Any], route: Route, candidate: Candidate, started: float,
    ticket: Ticket | None = None,
) -> Answer:
    target = candidate.target
    stack = contextlib.AsyncExitStack()
    await stack.__aenter__()
    metrics = gateway.metrics
    metrics.track_in_flight(target.model, 1)
    stack.callback(metrics.track_in_flight, target.model, -1)
    gateway.router.begin(target)
    stack.callback(gateway.router.end, target)
    response: aiohttp.ClientResponse | None = None
    try:
        if target.remote is None:
            try:
                upstream = await stack.enter_async_context(gateway.supervisor.lease(target.model))
            except EngineError as err:
                raise _TryNext(err, "engine_not_ready") from None
            base_url, api_key, timeout_s = upstream.base_url, upstream.api_key, None
        else:
            base_url, api_key = target.remote.base_url, target.remote.api_key
            timeout_s = target.remote.timeout_s
        body, plan = _upstream_body(kind, payload, candidate)
        stream = bool(payload.get("stream"))
        client_options = payload.get("stream_options") or {}
        wants_usage = bool(client_options.get("include_usage"))
        if stream:
            # Always ask for usage so token metrics are exact; the usage chunk is dropped unless the client asked.
            body["stream_options"] = {**client_options, "include_usage": True}
        url = base_url + _UPSTREAM_PATHS[kind]
        first_byte_s = gateway.config.router.first_byte_timeout_s
        # A stream's first-byte clock starts when the request is sent: it covers an upstream that accepted
        # the connection and never sends its headers, not just one that sends headers and then nothing.
        deadline = asyncio.get_running_loop().time() + first_byte_s
        try:
            # Non-stream requests have only the upstream's read timeout: no timer to arm (it showed in profiles).
            async with asyncio.timeout(first_byte_s) if stream else contextlib.nullcontext():
                response = await gateway.client.post(url, orjson.dumps(body), api_key=api_key, timeout_s=timeout_s)
        except TimeoutError:
            error = UpstreamError(f"{target.label} sent no stream data within {first_byte_s:g} s", status_code=504)
            raise _TryNext(error, "first_byte_timeout") from None
        except UpstreamError as err:
            if not err.retryable:
                raise _TargetFault(err) from None
            if target.remote is None and err.status_code != 504:
                # The supervisor leased a ready engine that refuses connections: it just died and is being
                # restarted. That is "not ready yet" (503 + Retry-After), not a bad gateway.
                restarting = EngineNotReady(f"{target.label} is not accepting connections (restarting?): {err}",
                                            retry_after_s=5)
                raise _TryNext(restarting, "engine_not_ready") from None
            raise _TryNext(err, "timeout" if err.status_code == 504 else "connect") from None
        headers = {"x-gpufleet-model": target.model, "x-gpufleet-target": target.label}
        if route.name != target.model:
            headers["x-gpufleet-route"] = route.name
        if route.tier is not None:
            headers["x-gpufleet-tier"] = route.tier
            headers["x-gpufleet-tier-by"] = route.tier_by or "rules"
        if ticket is not None:
            ticket.served(route=route.name, tier=route.tier, target=target.label, model=target.model)
            headers.update(ticket.headers)  # the key's x-ratelimit-* (OpenAI sends them on every answer)
        max_body = gateway.config.server.max_upstream_body_bytes
        if response.status != 200:
            raw = await _read_body(target, response, max_body)
            response.release()
            failure = _upstream_failure(target, response.status, raw)
            if isinstance(failure, UpstreamError) and response.status == 429:
                failure.retry_after_s = _retry_after(response.headers.get("Retry-After"))
            if (response.status >= 500 and response.status != 501) or response.status == 429:
                raise _TryNext(failure, f"http_{response.status}")
            raise failure
        if not stream:
            raw = await _read_body(target, response, max_body)
            response.release()
            data = _decode_upstream_json(target, raw)
            gateway.router.success(target)
            gateway.router_metrics.observe_served(route.name, target.model)
            if plan is not None:
                data = await _apply_dialect(gateway, data, body, plan, target, url, api_key, timeout_s)
            data["model"] = target.model
            usage = data.get("usage")
            if isinstance(usage, dict):
                metrics.observe_tokens(
                    target.model, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                )
                if ticket is not None:
                    ticket.usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                                 reasoning_tokens(usage))
            await stack.aclose()
            metrics.observe_request(target.model, kind, 200, time.perf_counter() - started)
            return Response(orjson.dumps(data), media_type=_JSON, headers=headers)
        _check_event_stream(target, response)
        remaining_s = max(0.0, deadline - asyncio.get_running_loop().time())
        first = await _first_bytes(target, response, first_byte_s, remaining_s)
        gateway.router_metrics.observe_served(route.name, target.model)
    except BaseException:
        if response is not None:
            response.close()  # e.g. the client left while we waited for the first byte: stop the upstream too
        await stack.aclose()
        raise

    rewriter = SSERewriter(served_model=target.model, client_wants_usage=wants_usage, stats=StreamStats(started),
                           max_event_bytes=gateway.config.server.max_upstream_event_bytes)
    if plan is not None:
        transformer = StreamTransformer(plan)
        rewriter.transform, rewriter.flush = transformer.feed, transformer.finish
        rewriter.stop_upstream = lambda: transformer.stop_upstream

    async def on_close(stats: StreamStats, disconnected: bool) -> None:
        await stack.aclose()
        elapsed = time.perf_counter() - stats.started
        status = 499 if disconnected else (502 if stats.error else 200)
        metrics.observe_request(target.model, kind, status, elapsed)
        if stats.first_token_at is not None:
            metrics.observe_ttft(target.model, stats.first_token_at - stats.started)
        metrics.observe_tokens(target.model, stats.prompt_tokens, stats.completion_tokens)
        if ticket is not None:
            ttft = None if stats.first_token_at is None else stats.first_token_at - stats.started
            ticket.usage(stats.prompt_tokens, stats.completion_tokens, stats.reasoning_tokens, ttft)
            ticket.close(status)
        if disconnected:
            metrics.observe_error(target.model, "client_disconnected")
        elif stats.shut_down:
            metrics.observe_error(target.model, "gateway_shutting_down")
        elif stats.error:
            metrics.observe_error(target.model, "upstream_stream_error")
            # Not retried (bytes reached the client), but a replica whose streams break is unhealthy.
            gateway.router.failure(target, stats.error)
        else:
            gateway.router.success(target)

    raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    return StreamRelayResponse(response, rewriter, headers=raw_headers, on_close=on_close, first=first,
                               live=gateway.streams)


async def _read_body(target: Target, response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, at most `limit` bytes. Breaking off, timing out or overflowing is the target's fault
    but is not retried: the upstream had already answered, so it ran the request."""
    parts: list[bytes] = []
    size = 0
    try:
        async for data in response.content.iter_any():
            size += len(data)
            if size > limit:
                response.close()
                error = UpstreamError(f"{target.label}'s answer exceeds {limit} bytes (server.max_upstream_body_bytes)")
                raise _TargetFault(error)
            parts.append(data)
    except (aiohttp.ClientError, TimeoutError) as err:
        response.close()
        error = UpstreamError(f"{target.label} broke off its answer: {err or type(err).__name__}",
                              status_code=504 if isinstance(err, TimeoutError) else 502)
        raise _TargetFault(error) from None
    return b"".join(parts)


def _retry_after(value: str | None) -> int | None:
    """An upstream's Retry-After in whole seconds (the delta-seconds form; a date or junk gives None)."""
    if value is None or not value.strip().isdigit():
        return None
    return max(1, int(value.strip()))


def _check_event_stream(target: Target, response: aiohttp.ClientResponse) -> None:
    """A stream request answered 200 with something else (an HTML page from a proxy, a JSON answer): the
    client would get an empty stream. Nothing was sent yet, so the next target may try."""
    declared = response.headers.get("Content-Type")
    if declared is not None and response.content_type != "text/event-stream":
        response.close()
        error = UpstreamError(f"{target.label} answered a stream request with {response.content_type}, "
                              "not an event stream")
        raise _TryNext(error, "not_event_stream")


async def _first_bytes(target: Target, response: aiohttp.ClientResponse, timeout_s: float,
                       remaining_s: float) -> bytes:
    """Wait for the stream's first bytes before answering the client, so a silent target can be skipped.

    `remaining_s` is what is left of `timeout_s` (router.first_byte_timeout_s) after the headers came.
    A connection that breaks now is not retried: the upstream had answered, so it is running the request.
    """
    try:
        first = await asyncio.wait_for(response.content.readany(), remaining_s)
    except TimeoutError:
        response.close()
        error = UpstreamError(f"{target.label} sent no stream data within {timeout_s:g} s", status_code=504)
        raise _TryNext(error, "first_byte_timeout") from None
    except aiohttp.ClientError as err:
        response.close()
        raise _TargetFault(UpstreamError(f"{target.label} broke off its stream: {err}")) from None
    if not first:
        response.close()
        raise _TryNext(UpstreamError(f"{target.label} ended its stream without sending anything"), "empty_stream")
    return first


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
        error = UpstreamError(f"{target.label} answered with a body that is not JSON: {raw[:200]!r}")
        raise _TargetFault(error) from None
    if not isinstance(data, dict):
        raise _TargetFault(UpstreamError(f"{target.label} answered with JSON that is not an object"))
    problem = chunk_problem(data)
    if problem is not None:
        raise _TargetFault(UpstreamError(f"{target.label} answered a malformed body: {problem}"))
    return data


def _upstream_failure(target: Target, status: int, raw: bytes) -> GpufleetError:
    """Map an upstream's error answer: client errors keep their status and message, server errors become 502."""
    message, param, _type = upstream_error_message(status, raw)
    if 400 <= status < 500 and status not in (408, 429):
        # e.g. vLLM's "max_tokens is too large": the client's request is wrong, say so with the engine's words.
        return RequestError(message, param=param, status_code=status, code=f"upstream_{status}")
    # 501: the engine does not do this at all (llama.cpp's embeddings without --embeddings): say so, as is.
    code = status if status in (429, 501, 503) else 502
    err = UpstreamError(f"{target.label} answered HTTP {status}: {message}", status_code=code)
    err.code = f"upstream_{status}"
    return err
