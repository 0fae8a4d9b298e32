"""Router metrics: which target served what, fallbacks, cooldowns, `auto` tiers, target health."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _TargetCollector(Collector):
    def __init__(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[GaugeMetricFamily]:
        healthy = GaugeMetricFamily(
            "gpufleet_target_healthy", "1 unless the target is in cooldown", labels=["model", "target"]
        )
        inflight = GaugeMetricFamily(
            "gpufleet_target_in_flight", "requests in flight per target", labels=["model", "target"]
        )
        # The gateway's in-flight count per model: the same count (the health board's), not a second one.
        requests = GaugeMetricFamily("gpufleet_in_flight_requests", "Requests in flight", labels=["model"])
        for item in self._snapshot():
            labels = [item["model"], item["target"]]
            healthy.add_metric(labels, 1.0 if item["healthy"] else 0.0)
            inflight.add_metric(labels, float(item["in_flight"]))
            requests.add_metric([item["model"]], float(item["in_flight"]))
        yield from (healthy, inflight, requests)


class RouterMetrics:
    """Counters on the gateway's registry; children cached like GatewayMetrics does."""

    def __init__(self, registry: CollectorRegistry, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        self.served = Counter(
            "gpufleet_route_requests",
            "Requests by route and the model that served them",
            ["route", "model"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "gpufleet_fallbacks",
            "Requests moved to the next target before the first byte",
            ["route", "from_model", "reason"],
            registry=registry,
        )
        self.resumes = Counter(
            "gpufleet_stream_resumes",
            "Broken streams continued on another replica, by outcome",
            ["route", "from_model", "to_model", "outcome"],
            registry=registry,
        )
        self.resume_counts: dict[str, int] = {}  # by outcome, for /status
        self.cooldowns = Counter(
            "gpufleet_target_cooldowns", "Times a target was put in cooldown", ["model"], registry=registry
        )
        self.tiers = Counter("gpufleet_auto_tier", "Requests for `auto` by chosen tier", ["tier"], registry=registry)
        self.classifier_outcomes = Counter(
            "gpufleet_auto_classifier",
            "`auto` decisions by a model classifier: decided, or why the rules did instead",
            ["classifier", "outcome"],
            registry=registry,
        )
        self.classifier_seconds = Histogram(
            "gpufleet_auto_classifier_seconds",
            "Time a model classifier took to decide an `auto` tier",
            ["classifier"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        registry.register(_TargetCollector(snapshot))
        self._children: dict[tuple[str, ...], Any] = {}

    def _child(self, family: Any, *labels: str) -> Any:
        key = (family._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def observe_served(self, route: str, model: str) -> None:
        self._child(self.served, route, model).inc()

    def observe_fallback(self, route: str, from_model: str, reason: str) -> None:
        self._child(self.fallbacks, route, from_model, reason).inc()

    def observe_resume(self, route: str, from_model: str, to_model: str, outcome: str) -> None:
        self._child(self.resumes, route, from_model, to_model, outcome).inc()
        self.resume_counts[outcome] = self.resume_counts.get(outcome, 0) + 1

    def observe_cooldown(self, model: str) -> None:
        self._child(self.cooldowns, model).inc()

    def observe_tier(self, tier: str) -> None:
        self._child(self.tiers, tier).inc()

    def observe_classifier(self, classifier: str, outcome: str, seconds: float | None = None) -> None:
        self._child(self.classifier_outcomes, classifier, outcome).inc()
        if seconds is not None:
            self._child(self.classifier_seconds, classifier).observe(seconds)
