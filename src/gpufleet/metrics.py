"""Prometheus metrics of the gateway (requests, latency, TTFT, tokens, errors — by model) and engine state.

One registry per app (tests build many apps). Label children are cached per (model, endpoint) because
`labels()` lookups are a measurable share of the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gpufleet.engine_supervisor.model_fleet import EngineState

# `gpufleet_engine_state` has one sample per supervisor state (1 = current), so alerts can say
# `gpufleet_engine_state{state="failed"} == 1` (deploy/prometheus/gpufleet-alerts.yml).
ENGINE_STATES = tuple(str(state) for state in EngineState)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _EngineCollector(Collector):
    """Reads engine states from the supervisor at scrape time (nothing to keep in sync)."""

    def __init__(self, status: Callable[[], list[dict[str, Any]]]) -> None:
        self._status = status

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("gpufleet_engine_up", "1 when the model's engine is ready", labels=["model", "state"])
        state = GaugeMetricFamily(
            "gpufleet_engine_state", "1 for the engine's current state, 0 for the others", labels=["model", "state"]
        )
        expected = GaugeMetricFamily(
            "gpufleet_engine_expected_up",
            "1 when the engine should always be up: preload, no idle TTL and no swap group",
            labels=["model"],
        )
        inflight = GaugeMetricFamily("gpufleet_engine_in_flight", "requests being served", labels=["model"])
        restarts = GaugeMetricFamily("gpufleet_engine_restarts", "restarts after crashes", labels=["model"])
        # Scraped from each vLLM's own /metrics (alerts: KV usage > 85% for 5 min, seed 003; queue length).
        running = GaugeMetricFamily("gpufleet_engine_requests_running", "vLLM requests running", labels=["model"])
        waiting = GaugeMetricFamily("gpufleet_engine_requests_waiting", "vLLM requests waiting", labels=["model"])
        kv_usage = GaugeMetricFamily(
            "gpufleet_engine_kv_cache_usage_ratio", "vLLM KV cache usage 0-1", labels=["model"]
        )
        kv_tokens = GaugeMetricFamily("gpufleet_engine_kv_cache_tokens", "KV cache capacity (tokens)", labels=["model"])
        for item in self._status():
            name = item["name"]
            up.add_metric([name, item["state"]], 1.0 if item["state"] == "ready" else 0.0)
            # A state this list lacks still gets its sample rather than all zeros.
            known = ENGINE_STATES if item["state"] in ENGINE_STATES else (*ENGINE_STATES, item["state"])
            for candidate in known:
                state.add_metric([name, candidate], 1.0 if item["state"] == candidate else 0.0)
            # Idle TTL and swap groups take engines down on purpose; only the rest is "down when it should be up".
            always_up = item.get("preload") and not item.get("idle_ttl_s") and not item.get("swap_group")
            expected.add_metric([name], 1.0 if always_up else 0.0)
            inflight.add_metric([name], float(item["in_flight"]))
            restarts.add_metric([name], float(item["restarts"]))
            scraped = item.get("engine_metrics")
            if scraped:
                running.add_metric([name], float(scraped["requests_running"]))
                waiting.add_metric([name], float(scraped["requests_waiting"]))
                if scraped["kv_cache_usage"] is not None:
                    kv_usage.add_metric([name], float(scraped["kv_cache_usage"]))
            capacity = (item.get("kv_cache") or {}).get("tokens")
            if capacity:
                kv_tokens.add_metric([name], float(capacity))
        yield from (up, state, expected, inflight, restarts, running, waiting, kv_usage, kv_tokens)


class GatewayMetrics:
    """The gateway's metric families and a cache of their labelled children."""

    def __init__(self, engine_status: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gpufleet_requests", "Requests answered", ["model", "endpoint", "status"], registry=r)
        self.latency = Histogram(
            "gpufleet_request_duration_seconds",
            "Time until the last byte",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gpufleet_time_to_first_token_seconds",
            "Time until the first streamed token",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("gpufleet_prompt_tokens", "Prompt tokens", ["model"], registry=r)
        self.completion_tokens = Counter("gpufleet_completion_tokens", "Generated tokens", ["model"], registry=r)
        self.errors = Counter("gpufleet_errors", "Errors by kind", ["model", "code"], registry=r)
        if engine_status is not None:
            r.register(_EngineCollector(engine_status))
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        key = (family._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = family.labels(*labels)
            self._children[key] = child
        return child

    def observe_request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        self._child(self.requests, model, endpoint, str(status)).inc()
        self._child(self.latency, model, endpoint).observe(seconds)

    def observe_ttft(self, model: str, seconds: float) -> None:
        self._child(self.ttft, model).observe(seconds)

    def observe_tokens(self, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self._child(self.prompt_tokens, model).inc(prompt)
        if completion:
            self._child(self.completion_tokens, model).inc(completion)

    def observe_error(self, model: str, code: str) -> None:
        self._child(self.errors, model, code).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
