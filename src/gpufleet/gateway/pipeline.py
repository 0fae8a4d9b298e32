"""The request pipeline between the protocol edge and the upstreams: route → fallback → forward → relay.

    reply = await pipeline.serve("chat", payload, route, protocol, started=t0, session=None)
    data = await pipeline.call("embedding", {"model": "embedder", "input": ["..."]})  # internal, a dict

Everything here sees only the internal chat form; `protocol` (gateway/client_protocol.py) turns answers and
stream chunks into the client's bytes. The fallback decisions are router/fallback.py's; one attempt at one
target is gateway/forward.py's. In flight is counted once, on the router's health board (the
gpufleet_in_flight_requests and gpufleet_target_in_flight gauges both read it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gpufleet.gateway.admission import Ticket
from gpufleet.gateway.client_protocol import OPENAI, ClientProtocol, Kind
from gpufleet.gateway.forward import Forwarder, Holds, JsonAnswer, OpenStream
from gpufleet.gateway.relay import LiveStreams, StreamRelayResponse, StreamStats, UpstreamResponse, reasoning_tokens
from gpufleet.gateway.request_body import UpstreamRequest, upstream_request
from gpufleet.gateway.stream_resume import ResumeTrail
from gpufleet.metrics import GatewayMetrics
from gpufleet.router.fallback import Failed, FallbackPolicy, Outcome, Served, try_in_order
from gpufleet.router.health import HealthBoard
from gpufleet.router.metrics import RouterMetrics
from gpufleet.router.select import TargetSelector
from gpufleet.router.table import Candidate, ModelTable, Route, Target

log = logging.getLogger("gpufleet.gateway")


@dataclass
class JsonReply:
    """A whole answer: the internal form's dict and the x-gpufleet-* headers."""

    data: dict[str, Any]
    headers: dict[str, str]
    model: str


Reply = JsonReply | StreamRelayResponse


class JsonResponse(Response):
    """A 200 JSON answer: Starlette's `Response` (same headers, in the same order), built from the encoded body
    and the header dict directly and sent with two plain ASGI messages (issue 22: the hot path's answer)."""

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.body = body
        self.background = None
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw += ((b"content-length", b"%d" % len(body)), (b"content-type", b"application/json"))
        self.raw_headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def route_headers(route: Route, target: Target) -> dict[str, str]:
    """What the client is told about who served it."""
    headers = {"x-gpufleet-model": target.model, "x-gpufleet-target": target.label}
    if route.name != target.model:
        headers["x-gpufleet-route"] = route.name
    if route.tier is not None:
        headers["x-gpufleet-tier"] = route.tier
        headers["x-gpufleet-tier-by"] = route.tier_by or "rules"
    return headers


class Pipeline:
    """Serves one request in the internal form along its route."""

    def __init__(
        self,
        *,
        forwarder: Forwarder,
        table: ModelTable,
        selector: TargetSelector,
        board: HealthBoard,
        router_metrics: RouterMetrics,
        metrics: GatewayMetrics,
        streams: LiveStreams,
        policy: FallbackPolicy,
    ) -> None:
        self.forwarder = forwarder
        self._table = table
        self._selector = selector
        self._board = board
        self._router_metrics = router_metrics
        self._metrics = metrics
        self._streams = streams
        self.policy = policy
        self._resume_parts = ResumeParts(forwarder, board, router_metrics, policy.max_resumes)

    async def serve(
        self,
        kind: Kind,
        payload: dict[str, Any],
        route: Route,
        protocol: ClientProtocol,
        *,
        started: float,
        session: str | None,
        ticket: Ticket | None = None,
    ) -> Response | StreamRelayResponse:
        """The client's answer (raises GpufleetError for the edge to put in the protocol's shape)."""
        reply = await self.reply(kind, payload, route, protocol, started=started, session=session, ticket=ticket)
        if isinstance(reply, StreamRelayResponse):
            return reply
        return JsonResponse(protocol.answer(reply.data), reply.headers)

    async def call(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """An internal, non-streamed request for `body["model"]` (the `auto` classifier, /chat): the answer dict.

        Routed, fallen back, counted and dialect-transformed as a client's request would be.
        """
        route = self._table.resolve(body["model"], body)
        reply = await self.reply(kind, body, route, OPENAI[kind], started=time.perf_counter(), session=None)
        assert isinstance(reply, JsonReply)
        return reply.data

    async def reply(
        self,
        kind: Kind,
        payload: dict[str, Any],
        route: Route,
        protocol: ClientProtocol,
        *,
        started: float,
        session: str | None,
        ticket: Ticket | None = None,
    ) -> Reply:
        """The route's first answer, before encoding (a whole answer's dict, or the stream to relay).

        `ticket` (a team key's admission, gateway/admission.py) learns who served and the usage; a stream's
        ticket is closed when the stream ends, a whole answer's by the caller."""
        candidates = self._selector.order(route, session=session, max_attempts=self.policy.max_attempts)

        async def attempt(candidate: Candidate, last_resort: bool) -> Outcome[Reply]:
            return await self._attempt(kind, payload, route, protocol, candidate, started, last_resort, ticket)

        reply = await try_in_order(
            route.name, candidates, attempt, policy=self.policy, board=self._board, metrics=self._router_metrics
        )
        if isinstance(reply, JsonReply):
            usage = reply.data.get("usage")
            if isinstance(usage, dict):
                prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                self._metrics.observe_tokens(reply.model, prompt, completion)
                if ticket is not None:
                    ticket.usage(prompt, completion, reasoning_tokens(usage))
            self._metrics.observe_request(reply.model, protocol.endpoint, 200, time.perf_counter() - started)
        return reply

    async def _attempt(
        self,
        kind: Kind,
        payload: dict[str, Any],
        route: Route,
        protocol: ClientProtocol,
        candidate: Candidate,
        started: float,
        last_resort: bool,
        ticket: Ticket | None,
    ) -> Outcome[Reply]:
        target = candidate.target
        request = upstream_request(kind, payload, candidate, started=started, encoder=protocol.stream_encoder)
        # Only a stream can resume on another replica: a whole answer skips the search (2% of its CPU, py-spy).
        replicas = _other_replicas(route, candidate) if request.stream and self.policy.max_resumes > 0 else ()
        request.resumable = bool(replicas)
        stack = Holds()
        self._board.begin(target)
        stack.callback(self._board.end, target)
        try:
            outcome = await self.forwarder.attempt(target, request, stack, last_resort=last_resort)
        except BaseException:
            await stack.aclose()  # e.g. the client left while we waited: the upstream connection closes too
            raise
        if isinstance(outcome, Failed):
            await stack.aclose()
            return outcome
        self._router_metrics.observe_served(route.name, target.model)
        headers = route_headers(route, target)
        if ticket is not None:
            ticket.served(route=route.name, tier=route.tier, target=target.label, model=target.model)
            headers.update(ticket.headers)  # the key's x-ratelimit-* (OpenAI sends them on every answer)
        answer = outcome.answer
        if isinstance(answer, JsonAnswer):
            await stack.aclose()
            self._board.success(target)
            return Served(JsonReply(answer.data, headers, target.model))
        resume = None
        if request.resumable:
            resume = StreamResumer(
                self._resume_parts,
                route,
                replicas,
                answer,
                stack,
                lambda c: upstream_request(kind, payload, c, started=started, encoder=protocol.stream_encoder),
            )
        return Served(self._relay(answer, headers, stack, protocol.endpoint, ticket, resume))

    def _relay(
        self,
        stream: OpenStream,
        headers: dict[str, str],
        stack: Holds,
        endpoint: str,
        ticket: Ticket | None,
        resume: StreamResumer | None,
    ) -> StreamRelayResponse:
        metrics, board = self._metrics, self._board
        serving = resume.serving if resume is not None else [stream.target]  # the last entry serves now

        async def on_close(stats: StreamStats, disconnected: bool) -> None:
            await stack.aclose()
            target = serving[-1]
            status = 499 if disconnected else (502 if stats.error else 200)
            metrics.observe_request(target.model, endpoint, status, time.perf_counter() - stats.started)
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
                board.failure(target, stats.error)
            else:
                board.success(target)

        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        return StreamRelayResponse(
            stream.response,
            stream.rewriter,
            headers=raw_headers,
            on_close=on_close,
            first=stream.first,
            live=self._streams,
            resume=resume.resume if resume is not None else None,
            stall_s=self.policy.stream_stall_timeout_s,
        )


@dataclass(frozen=True)
class ResumeParts:
    """What a stream resume uses of the pipeline."""

    forwarder: Forwarder
    board: HealthBoard
    metrics: RouterMetrics
    max_resumes: int


def _other_replicas(route: Route, candidate: Candidate) -> tuple[Candidate, ...]:
    """Who can continue the candidate's stream: the other targets of its replica group (the same model), then the
    route's `resume_fallbacks` (declared to have the same weights and tokenizer)."""
    same = next((group for group in route.groups if candidate in group), ())
    others = [c for c in same if c.target != candidate.target]
    others += [
        c
        for group in route.groups
        if group is not same
        for c in group
        if c.target.model in route.resumable and c.target != candidate.target
    ]
    return tuple(others)


class StreamResumer:
    """Continues one broken stream on the next healthy replica of its group (at most router.max_resumes times)."""

    def __init__(
        self,
        parts: ResumeParts,
        route: Route,
        replicas: tuple[Candidate, ...],
        stream: OpenStream,
        stack: Holds,
        request_for: Callable[[Candidate], UpstreamRequest],
    ) -> None:
        self._parts, self._route, self._replicas, self._stack = parts, route, replicas, stack
        self._rewriter = stream.rewriter
        self._request_for = request_for
        self.serving: list[Target] = [stream.target]

    async def resume(self, trail: ResumeTrail, reason: str) -> tuple[UpstreamResponse, bytes] | None:
        """The continuing upstream and the client bytes it already produced; None: end with the error event."""
        parts, broken = self._parts, self.serving[-1]
        board, metrics = parts.board, parts.metrics
        board.failure(broken, reason)
        while trail.resumes < parts.max_resumes:
            candidate = self._next()
            if candidate is None:
                metrics.observe_resume(self._route.name, broken.model, "", "no_replica")
                return None
            target = candidate.target
            request = self._request_for(candidate).continuation(self._rewriter, trail)
            if request is None:
                metrics.observe_resume(self._route.name, broken.model, target.model, "not_resumable")
                return None
            trail.begin_resume()
            board.begin(target)
            self._stack.callback(board.end, target)
            outcome = await parts.forwarder.attempt(target, request, self._stack, last_resort=False)
            self.serving.append(target)
            if isinstance(outcome, Failed):
                if outcome.counts:
                    board.failure(target, str(outcome.error))
                metrics.observe_resume(self._route.name, broken.model, target.model, "failed")
                log.warning(
                    "%s: resuming a broken stream on %s failed: %s", self._route.name, target.label, outcome.error
                )
                broken = target
                continue
            answer = outcome.answer
            assert isinstance(answer, OpenStream)
            metrics.observe_resume(self._route.name, broken.model, target.model, "resumed")
            log.warning(
                "%s: stream from %s broke (%s); continued on %s after %d chunks",
                self._route.name,
                broken.label,
                reason,
                target.label,
                trail.generated,
            )
            return answer.response, answer.first
        return None

    def _next(self) -> Candidate | None:
        now = time.monotonic()
        board = self._parts.board
        for candidate in self._replicas:
            target = candidate.target
            if target not in self.serving and board[target.model].available(now):
                return candidate
        return None
