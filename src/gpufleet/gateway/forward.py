"""One attempt at one target: open it, send the request, read the answer or the stream's first bytes.

`Forwarder.attempt(...)` is the attempt function the fallback loop (router/fallback.py) is handed; it returns
a typed outcome (`Served` or `Failed`) and never decides whether to move on. `open_target()` is the one way
to a target, local (a supervisor lease: the engine is not idle-unloaded or swapped while it serves) or
remote; both give one `Endpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from gpufleet.dialects import retry_body, transform_response, validate_structured
from gpufleet.dialects.plan import ResponsePlan
from gpufleet.engine_supervisor import EngineState, Supervisor
from gpufleet.errors import EngineError, EngineNotReady, RequestError, UpstreamError
from gpufleet.gateway.relay import SSERewriter, UpstreamClient, UpstreamDropped, UpstreamResponse
from gpufleet.gateway.request_body import UpstreamRequest
from gpufleet.gateway.upstream_answer import (
    AnswerFault,
    check_event_stream,
    decode_answer,
    read_body,
    retry_after,
    upstream_failure,
)
from gpufleet.router.fallback import Failed, Served
from gpufleet.router.table import Target

_UPSTREAM_PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}


class Holds:
    """What an attempt holds open (a local engine's lease, the upstream response, the in-flight count), released
    last-in first-out by `aclose()`: `contextlib.AsyncExitStack`'s `callback`, `enter_async_context` and `aclose`
    for the hot path, without the stack's wrapper per callback (5% of a non-stream request's CPU, issue 22). As
    the stack does, every exit runs even when one raises; the last error is raised, each async exit is told of
    the error pending and may suppress it."""

    __slots__ = ("_exits",)

    def __init__(self) -> None:
        self._exits: list[tuple[Callable[..., Any], tuple[Any, ...], bool]] = []

    def callback(self, fn: Callable[..., Any], *args: Any) -> None:
        self._exits.append((fn, args, False))

    async def enter_async_context(self, manager: contextlib.AbstractAsyncContextManager[Any]) -> Any:
        value = await manager.__aenter__()
        self._exits.append((manager.__aexit__, (), True))
        return value

    async def aclose(self) -> None:
        pending: BaseException | None = None
        exits = self._exits
        while exits:
            fn, args, is_async = exits.pop()
            try:
                if not is_async:
                    fn(*args)
                elif await fn(type(pending) if pending else None, pending, pending.__traceback__ if pending else None):
                    pending = None  # the context manager suppressed it
            except BaseException as err:  # the remaining exits still run; the last error is raised
                if pending is not None and err is not pending:
                    err.__context__ = pending
                pending = err
        if pending is not None:
            raise pending


@dataclass(frozen=True)
class Endpoint:
    """Where one attempt sends its request: a leased local engine or a remote upstream."""

    base_url: str
    api_key: str | None
    timeout_s: float | None  # the read timeout; None = server.request_timeout_s
    local: bool


@dataclass(frozen=True)
class ForwardLimits:
    """The settings an attempt reads (from server: and router:)."""

    first_byte_timeout_s: float
    max_upstream_body_bytes: int
    max_upstream_event_bytes: int


@dataclass
class JsonAnswer:
    """A whole (non-stream) answer in the internal form, after the dialect, `model` the served name."""

    data: dict[str, Any]
    target: Target


@dataclass
class OpenStream:
    """A stream that started: the upstream response and what its first bytes made for the client."""

    response: UpstreamResponse
    rewriter: SSERewriter
    first: bytes
    target: Target


class Forwarder:
    """Sends one request to one target."""

    def __init__(
        self,
        client: UpstreamClient,
        supervisor: Supervisor,
        limits: ForwardLimits,
        ready_timeout_s: Mapping[str, float],
    ) -> None:
        self.client = client
        self._supervisor = supervisor
        self.limits = limits
        self._ready_timeout_s = ready_timeout_s
        self._remotes: dict[str, Endpoint] = {}

    async def open_target(self, target: Target, stack: Holds, *, last_resort: bool = False) -> Endpoint:
        """The target's endpoint, held until `stack` closes. A local engine is leased (started on demand; not
        idle-unloaded or swapped while leased); as the `last_resort` of a fallback a starting engine is waited
        for up to its ready_timeout_s, not the queue's server.queue_timeout_s (issue 21: a cold standby). A
        remote needs nothing held: its endpoint is built once."""
        remote = target.remote
        if remote is not None:
            endpoint = self._remotes.get(target.model)
            if endpoint is None:
                endpoint = self._remotes[target.model] = Endpoint(
                    remote.base_url, remote.api_key, remote.timeout_s, local=False
                )
            return endpoint
        wait_s = self._ready_timeout_s.get(target.model) if last_resort else None
        upstream = await stack.enter_async_context(self._supervisor.lease(target.model, wait_s=wait_s))
        return Endpoint(upstream.base_url, upstream.api_key, None, local=True)

    async def attempt(
        self, target: Target, request: UpstreamRequest, stack: Holds, *, last_resort: bool
    ) -> Served[JsonAnswer | OpenStream] | Failed:
        """Open `target`, send `request`, and read the answer (or a stream's first bytes). What it holds open
        (the lease, the response) is left on `stack` for the caller to close when the answer is over."""
        try:
            endpoint = await self.open_target(target, stack, last_resort=last_resort)
        except EngineError as err:
            return self._not_ready(target, err)
        url = endpoint.base_url + _UPSTREAM_PATHS[request.kind]
        deadline = asyncio.get_running_loop().time() + self.limits.first_byte_timeout_s
        sent = await self._send(target, endpoint, url, request)
        if isinstance(sent, Failed):
            return sent
        stack.callback(sent.close)  # a no-op once the answer was read and released
        try:
            if sent.status != 200:
                return await self._error_answer(target, sent)
            if not request.stream:
                return Served(await self._json_answer(target, endpoint, url, request, sent))
            check_event_stream(target, sent)
            return Served(await self._open_stream(target, request, sent, deadline))
        except AnswerFault as fault:
            return fault.failed

    def _not_ready(self, target: Target, err: EngineError) -> Failed:
        slot = self._supervisor.slots.get(target.model)
        if slot is not None and slot.state == EngineState.STARTING:
            # A cold standby loading for 20-40 s is not a failing target: no cooldown (issue 21).
            return Failed(err, "starting", counts=False)
        return Failed(err, "engine_not_ready")

    async def _send(
        self, target: Target, endpoint: Endpoint, url: str, request: UpstreamRequest
    ) -> UpstreamResponse | Failed:
        first_byte_s = self.limits.first_byte_timeout_s
        try:
            # A stream's first-byte clock starts when the request is sent: it covers an upstream that accepted
            # the connection and never sends its headers. Non-stream requests have only the read timeout.
            async with asyncio.timeout(first_byte_s) if request.stream else contextlib.nullcontext():
                return await self.client.post(
                    url, request.encoded(), api_key=endpoint.api_key, timeout_s=endpoint.timeout_s
                )
        except TimeoutError:
            error = UpstreamError(f"{target.label} sent no stream data within {first_byte_s:g} s", status_code=504)
            return Failed(error, "first_byte_timeout")
        except UpstreamDropped as err:
            gone = self._engine_gone(target, endpoint)
            if gone is not None:
                return Failed(gone, "engine_stopped")
            return Failed(err, "disconnect", sent=True, counts=not err.reused, stale_connection=err.reused)
        except UpstreamError as err:
            if endpoint.local and err.status_code != 504:
                # The supervisor leased a ready engine that refuses connections: it just died and is being
                # restarted (or stopped). That is "not ready" (503 + Retry-After), not a bad gateway.
                gone = self._engine_gone(target, endpoint) or EngineNotReady(
                    f"{target.label} is not accepting connections (restarting?): {err}", retry_after_s=5
                )
                return Failed(gone, "engine_not_ready")
            return Failed(err, "timeout" if err.status_code == 504 else "connect")

    def _engine_gone(self, target: Target, endpoint: Endpoint) -> EngineNotReady | None:
        """503 for a request whose local engine was stopped (an admin stop, a swap) or crashed under it."""
        slot = self._supervisor.slots.get(target.model) if endpoint.local else None
        if slot is None or slot.state == EngineState.READY:
            return None
        verb = "was stopped" if slot.state in (EngineState.STOPPING, EngineState.STOPPED) else f"is {slot.state}"
        return EngineNotReady(f"model {target.model!r} {verb} before it answered; retry", retry_after_s=1)

    async def _error_answer(self, target: Target, response: UpstreamResponse) -> Failed:
        raw = await read_body(target, response, self.limits.max_upstream_body_bytes)
        response.release()
        status = response.status
        failure = upstream_failure(target, status, raw)
        if isinstance(failure, UpstreamError) and status == 429:
            failure.retry_after_s = retry_after(response.headers.get("Retry-After"))
        if isinstance(failure, RequestError) or status == 501 or (status < 500 and status != 429):
            return Failed(failure, f"http_{status}", counts=False, final=True)  # no target would do better
        return Failed(failure, f"http_{status}")

    async def _json_answer(
        self, target: Target, endpoint: Endpoint, url: str, request: UpstreamRequest, response: UpstreamResponse
    ) -> JsonAnswer:
        raw = await read_body(target, response, self.limits.max_upstream_body_bytes)
        response.release()
        data = decode_answer(target, raw)
        if request.plan is not None:
            data = await self._apply_dialect(target, endpoint, url, request, data, request.plan)
        data["model"] = target.model
        return JsonAnswer(data, target)

    async def _apply_dialect(
        self,
        target: Target,
        endpoint: Endpoint,
        url: str,
        request: UpstreamRequest,
        data: dict[str, Any],
        plan: ResponsePlan,
    ) -> dict[str, Any]:
        """Split reasoning / parse tool calls; validate structured output and re-ask once when it is invalid."""
        data = transform_response(data, plan)
        problem = validate_structured(data, plan)
        if problem is None:
            return data
        retry = orjson.dumps(retry_body(request.body, data, problem))
        response = await self.client.post(url, retry, api_key=endpoint.api_key, timeout_s=endpoint.timeout_s)
        raw = await response.read()
        response.release()
        if response.status != 200:
            raise upstream_failure(target, response.status, raw)
        second = transform_response(decode_answer(target, raw), plan)
        still = validate_structured(second, plan)
        if still is not None:
            err = UpstreamError(
                f"{target.label}: the model's output does not match response_format after one retry: {still}",
                status_code=502,
                retryable=False,
            )
            err.code = "structured_output_invalid"
            raise err
        return second

    async def _open_stream(
        self, target: Target, request: UpstreamRequest, response: UpstreamResponse, deadline: float
    ) -> OpenStream:
        """Read until the stream gives the client something: a failure before that can still fall back."""
        rewriter = request.rewriter(target, self.limits.max_upstream_event_bytes)
        while True:
            try:
                # timeout_at, not wait_for: wait_for wraps every read in a task of its own (Python 3.11).
                async with asyncio.timeout_at(deadline):
                    data = await response.content.readany()
            except TimeoutError:
                error = UpstreamError(
                    f"{target.label} sent no stream data within {self.limits.first_byte_timeout_s:g} s", status_code=504
                )
                raise AnswerFault(Failed(error, "first_byte_timeout")) from None
            except aiohttp.ClientError as err:
                error = UpstreamError(f"{target.label} broke off its stream: {err or type(err).__name__}")
                raise AnswerFault(Failed(error, "disconnect", sent=True)) from None
            out = rewriter.feed(data) if data else rewriter.close()
            if rewriter.failure is not None or rewriter.stats.error is not None:
                raise AnswerFault(_stream_failure(target, rewriter, data))
            if out or rewriter.stats.chunks or rewriter.done_sent:
                return OpenStream(response, rewriter, out, target)


def _stream_failure(target: Target, rewriter: SSERewriter, data: bytes) -> Failed:
    if rewriter.stats.error is not None:
        error = UpstreamError(f"{target.label} answered with an error event: {rewriter.stats.error}")
        return Failed(error, "upstream_error", sent=True)
    if not data and rewriter.stats.chunks == 0:
        return Failed(UpstreamError(f"{target.label} ended its stream without sending anything"), "empty_stream")
    error = UpstreamError(f"{target.label} broke off its stream: {rewriter.failure}")
    return Failed(error, "malformed" if data else "disconnect", sent=True)
