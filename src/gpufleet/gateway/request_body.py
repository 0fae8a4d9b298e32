"""The request one target receives: route defaults and the dialect applied to the client's body, encoded once.

The client's payload is never modified; each attempt makes its own body with at most two shallow copies
(the route's defaults, where it has any, then the dialect's prepared body, which is used as is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gpufleet.dialects import StreamTransformer, prepare_request
from gpufleet.dialects.plan import ResponsePlan
from gpufleet.gateway.client_protocol import Kind, StreamEncoder
from gpufleet.gateway.protocol import check_text_only
from gpufleet.gateway.relay import SSERewriter, StreamStats
from gpufleet.gateway.stream_resume import ResumeTrail, resume_body
from gpufleet.router.defaults import apply_request_defaults
from gpufleet.router.table import Candidate, Target


@dataclass
class UpstreamRequest:
    """The body for one target, the plan for its answer, and how its stream is to be rewritten."""

    kind: Kind
    body: dict[str, Any]
    plan: ResponsePlan | None
    stream: bool
    wants_usage: bool  # the client asked for the usage chunk (the gateway always asks, for its metrics)
    started: float  # perf_counter at the request's arrival (latency and TTFT are measured from here)
    encoder: Callable[[], StreamEncoder | None]
    resumable: bool = False  # keep the stream's trail so that another replica can continue it
    continues: SSERewriter | None = None  # a continuation: the broken stream's rewriter goes on with this upstream
    _encoded: bytes | None = field(default=None, repr=False)

    def encoded(self) -> bytes:
        """The JSON body (serialized once, also when the same target is tried again)."""
        if self._encoded is None:
            self._encoded = orjson.dumps(self.body)
        return self._encoded

    def rewriter(self, target: Target, max_event_bytes: int) -> SSERewriter:
        """A stream's rewriter, built whole: the dialect's hooks and the client protocol's encoder."""
        if self.continues is not None:
            return self.continues  # the same dialect state and encoder: the client sees one stream
        transformer = StreamTransformer(self.plan) if self.plan is not None else None
        return SSERewriter(
            served_model=target.model,
            client_wants_usage=self.wants_usage,
            stats=StreamStats(self.started),
            transform=transformer.feed if transformer is not None else None,
            flush=transformer.finish if transformer is not None else None,
            stop_upstream=(lambda: transformer.stop_upstream) if transformer is not None else None,
            plain_transform=transformer is not None and transformer.relays_plain_content,
            encoder=self.encoder(),
            max_event_bytes=max_event_bytes,
            trail=ResumeTrail() if self.resumable else None,
        )

    def continuation(self, rewriter: SSERewriter, trail: ResumeTrail) -> UpstreamRequest | None:
        """This request (built for another replica) continuing `trail`, relayed through `rewriter`; None when
        the stream cannot be continued (gateway/stream_resume.py)."""
        if self.kind == "embedding":
            return None
        body = resume_body(self.body, self.kind, trail)
        if body is None:
            return None
        return UpstreamRequest(
            self.kind, body, self.plan, self.stream, self.wants_usage, self.started, self.encoder, continues=rewriter
        )


def upstream_request(
    kind: Kind,
    payload: dict[str, Any],
    candidate: Candidate,
    *,
    started: float,
    encoder: Callable[[], StreamEncoder | None],
) -> UpstreamRequest:
    """The request for `candidate`: its route defaults, its dialect, the upstream's model name.

    RequestError (400) for media a text-only engine cannot take (llama.cpp would answer 500: issue 21); a token
    limit beyond the target's known context is capped to it."""
    if candidate.has_defaults:
        payload = apply_request_defaults(payload, candidate.defaults, kind=kind)
    payload = fit_to_target(kind, payload, candidate.target)
    plan: ResponsePlan | None = None
    if kind == "embedding":
        body = {**payload, "model": candidate.target.upstream_model}
    else:
        prepared = prepare_request(payload, kind=kind, defaults=candidate.dialect)
        body, plan = prepared.body, prepared.plan  # a fresh dict: ours to change
        body["model"] = candidate.target.upstream_model
    stream = bool(payload.get("stream"))
    client_options = payload.get("stream_options") or {}
    if stream:
        # Always ask for usage so token metrics are exact; the usage chunk is dropped unless the client asked.
        body["stream_options"] = {**client_options, "include_usage": True}
    return UpstreamRequest(kind, body, plan, stream, bool(client_options.get("include_usage")), started, encoder)


def fit_to_target(kind: Kind, payload: dict[str, Any], target: Target) -> dict[str, Any]:
    """`payload` as `target` can take it: RequestError (400) for media a text-only engine cannot read; a token limit
    above the target's known context capped to that context (a copy; the client's payload is not changed).

    Capped, not refused, on llama.cpp (which would silently stop at its context anyway): coding agents ask for far
    more than a local model holds (Claude Code sends max_tokens 32000)."""
    if kind == "chat" and target.text_only:
        check_text_only(payload, target.model)
    if target.max_context is None or not target.caps_max_tokens or kind == "embedding":
        return payload  # vLLM answers a limit beyond max_model_len with its own clear 400
    for name in ("max_tokens", "max_completion_tokens"):
        limit = payload.get(name)
        if isinstance(limit, int) and limit > target.max_context:
            payload = {**payload, name: target.max_context}
    return payload
