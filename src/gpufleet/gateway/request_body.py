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
from gpufleet.gateway.relay import SSERewriter, StreamStats
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
    _encoded: bytes | None = field(default=None, repr=False)

    def encoded(self) -> bytes:
        """The JSON body (serialized once, also when the same target is tried again)."""
        if self._encoded is None:
            self._encoded = orjson.dumps(self.body)
        return self._encoded

    def rewriter(self, target: Target, max_event_bytes: int) -> SSERewriter:
        """A stream's rewriter, built whole: the dialect's hooks and the client protocol's encoder."""
        transformer = StreamTransformer(self.plan) if self.plan is not None else None
        return SSERewriter(
            served_model=target.model, client_wants_usage=self.wants_usage, stats=StreamStats(self.started),
            transform=transformer.feed if transformer is not None else None,
            flush=transformer.finish if transformer is not None else None,
            stop_upstream=(lambda: transformer.stop_upstream) if transformer is not None else None,
            encoder=self.encoder(), max_event_bytes=max_event_bytes,
        )


def upstream_request(kind: Kind, payload: dict[str, Any], candidate: Candidate, *, started: float,
                     encoder: Callable[[], StreamEncoder | None]) -> UpstreamRequest:
    """The request for `candidate`: its route defaults, its dialect, the upstream's model name."""
    if candidate.has_defaults:
        payload = apply_request_defaults(payload, candidate.defaults, kind=kind)
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
