"""Admission and accounting of every request: a key's models and limits before, its ledger row after.

The request path calls two things (docs/keys.md):

    ticket = gateway.admission.admit(principal, model_asked, names, endpoint)   # 403 / 429 raise here
    ... forward ...
    ticket.served(route=..., tier=..., target=..., model=...)                   # once a target answers
    ticket.usage(prompt_tokens, completion_tokens, reasoning_tokens, ttft_s)
    ticket.close(status)                                                         # exactly once matters; more is a no-op

`admit` never touches the database: keys and limits are in memory (KeyDirectory, Limiter); `close` appends
the ledger row to the UsageWriter's queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpufleet.config import ServerConfig
from gpufleet.errors import RateLimited, RequestError
from gpufleet.gateway.auth import Principal
from gpufleet.limits import Limiter
from gpufleet.store import KeyDirectory, KeyRecord, StoreSnapshot, UsageRow, UsageWriter, open_store

log = logging.getLogger("gpufleet.gateway")
MAX_KEY_LABELS = 100  # `server.metrics_per_key`: more key names than this count as "other"


class Ticket:
    """One admitted request: releases its concurrency slot and queues its ledger row when closed."""

    __slots__ = ("_admission", "_closed", "_started", "headers", "principal", "row")

    def __init__(self, admission: Admission, principal: Principal, row: UsageRow, headers: dict[str, str]) -> None:
        self._admission = admission
        self.principal = principal
        self.row = row
        self.headers = headers  # x-ratelimit-* for the answer (empty for keys without limits)
        self._started = time.perf_counter()
        self._closed = False

    def served(self, *, route: str, tier: str | None, target: str, model: str) -> None:
        row = self.row
        row.route, row.tier, row.target, row.model_served = route, tier or "", target, model

    def usage(
        self, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0, ttft_s: float | None = None
    ) -> None:
        row = self.row
        row.prompt_tokens, row.completion_tokens, row.reasoning_tokens = (
            prompt_tokens,
            completion_tokens,
            reasoning_tokens,
        )
        row.ttft_s = ttft_s

    def close(self, status: int) -> None:
        if self._closed:
            return
        self._closed = True
        self.row.status = status
        self.row.duration_s = time.perf_counter() - self._started
        self._admission.finish(self)


class _StoreCollector(Collector):
    def __init__(self, writer: UsageWriter) -> None:
        self._writer = writer

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "gpufleet_store_up", "1 when the key/usage store answered its last call", labels=["backend"]
        )
        up.add_metric([self._writer.store.dialect], 1.0 if self._writer.up else 0.0)
        pending = GaugeMetricFamily("gpufleet_store_pending_rows", "usage rows waiting to be written")
        pending.add_metric([], float(self._writer.pending))
        dropped = GaugeMetricFamily("gpufleet_store_dropped_rows", "usage rows dropped during an outage (queue full)")
        dropped.add_metric([], float(self._writer.dropped))
        yield from (up, pending, dropped)


class Admission:
    """Team keys' models and limits, and the usage ledger, for one gateway."""

    def __init__(self, server: ServerConfig, directory: KeyDirectory, registry: CollectorRegistry) -> None:
        self.directory = directory
        self._shared_store = server.database_url is not None
        self.limiter = Limiter()
        self.writer = UsageWriter(
            open_store(server.database_url), on_refresh=self._refreshed, retention_days=server.usage_retention_days
        )
        registry.register(_StoreCollector(self.writer))
        self.rate_limited = Counter(
            "gpufleet_rate_limited", "Requests refused by a key's limit (HTTP 429)", ["limit"], registry=registry
        )
        self._per_key: tuple[Counter, Counter] | None = None
        if server.metrics_per_key:
            self._per_key = (
                Counter("gpufleet_key_requests", "Requests by team key name", ["key", "status"], registry=registry),
                Counter("gpufleet_key_tokens", "Tokens by team key name", ["key", "kind"], registry=registry),
            )
        self._key_labels: set[str] = set()
        self._allowed: dict[tuple[str, str, tuple[str, ...]], bool] = {}  # (key hash, asked, names) → may use

    async def start(self) -> None:
        await self.writer.start()
        if not self.writer.up and self._shared_store:
            # A configured database we cannot read may hold team keys: refuse requests without a key rather than
            # open the gateway to everyone (static admin keys still work).
            self.directory.enabled = True
            log.warning(
                "store %s is down at startup: team keys are unknown until it answers; requests without "
                "a key are refused",
                self.writer.store.where,
            )

    async def close(self) -> None:
        await self.writer.close()

    def _refreshed(self, snapshot: StoreSnapshot) -> None:
        self.directory.replace(snapshot.keys)
        self._allowed = {}  # models of a key may have changed (a key is replaced, never edited: cheap to redo)
        self.limiter.note_day_tokens(snapshot.day_tokens, time.time())

    def admit(self, principal: Principal, model_asked: str, names: tuple[str, ...], endpoint: str) -> Ticket:
        """Admit a request for a model known by `names` (asked, route, served); RequestError 403 when the key
        may not use it, RateLimited 429 when a limit is reached. The caller must `close()` the ticket."""
        key = principal.key
        row = UsageRow(
            time.time(), key.id if key is not None else principal.name, principal.name, endpoint, model_asked
        )
        headers: dict[str, str] = {}
        if key is not None:
            if not self._allows(key, model_asked, names):
                self._refused(row, 403)
                raise RequestError(
                    f"this API key may not use model {model_asked!r} (its models: {', '.join(key.models)})",
                    param="model",
                    status_code=403,
                    code="model_not_allowed",
                )
            try:
                headers = self.limiter.acquire(key.id, key.limits, row.ts)
            except RateLimited as err:
                self.rate_limited.labels(err.error_type).inc()
                self._refused(row, 429)
                raise
        return Ticket(self, principal, row, headers)

    def _allows(self, key: KeyRecord, model_asked: str, names: tuple[str, ...]) -> bool:
        """`key.allows` remembered: pattern matching costs microseconds, a dict lookup a fraction of one."""
        cache_key = (key.key_hash, model_asked, names)
        allowed = self._allowed.get(cache_key)
        if allowed is None:
            allowed = key.allows(model_asked, *names)
            if len(self._allowed) > 10_000:
                self._allowed.clear()  # bounded: model names come from clients
            self._allowed[cache_key] = allowed
        return allowed

    def _refused(self, row: UsageRow, status: int) -> None:
        row.status = status
        self.writer.record(row)
        self._count_key(row)

    def finish(self, ticket: Ticket) -> None:
        row = ticket.row
        key = ticket.principal.key
        if key is not None:
            self.limiter.release(key.id, row.tokens, time.time())
        self.writer.record(row)
        self._count_key(row)

    def _count_key(self, row: UsageRow) -> None:
        if self._per_key is None:
            return
        label = row.key_name
        if label not in self._key_labels:
            if len(self._key_labels) >= MAX_KEY_LABELS:
                label = "other"  # bounded cardinality: a flood of new keys cannot blow up the scrape
            else:
                self._key_labels.add(label)
        requests, tokens = self._per_key
        requests.labels(label, str(row.status)).inc()
        if row.prompt_tokens:
            tokens.labels(label, "prompt").inc(row.prompt_tokens)
        if row.completion_tokens:
            tokens.labels(label, "completion").inc(row.completion_tokens)

    def status(self) -> dict[str, Any]:
        """For /status: the store's health and how many team keys are loaded (never a key or a hash)."""
        return {**self.writer.status(), "team_keys": len(self.directory)}
