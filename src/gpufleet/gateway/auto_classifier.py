"""`router.auto.classifier: {kind: knn|judge}`: a model picks the `auto` tier, through the gateway itself.

The classifier's call is an ordinary gateway request (the pipeline's internal call, an answer dict): its
model starts on demand, fallbacks and cooldowns apply, and the metrics count it. Whenever the model cannot
answer (warming up, slower than `timeout_s`, an error, an unreadable verdict) the rules decide instead, so
`auto` never fails because of its classifier and costs at most `timeout_s` more than the rules. Each
decision says who made it, in the `x-gpufleet-tier-by` header: `knn`, `judge`, or `rules (<why>)`.

kNN needs the labelled examples embedded once. That runs in the background from startup; the vectors are
cached on disk under the cache root, keyed by the embedding model's settings and the examples file, so a
restart does not embed them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from gpufleet import paths
from gpufleet.config import AutoModelClassifier
from gpufleet.errors import GpufleetError
from gpufleet.router.classifier import ComplexityClassifier, Tier
from gpufleet.router.judge_classifier import judge_body, parse_judgement
from gpufleet.router.knn_classifier import EMBED_CHARS, KnnTierClassifier, request_text
from gpufleet.router.labelled_set import SHIPPED, load_labelled
from gpufleet.router.metrics import RouterMetrics
from gpufleet.router.table import ModelTable, Route

# The pipeline's internal call: (kind, body) -> the answer dict (routed, fallen back and counted as a request).
InternalCall = Callable[[Literal["chat", "embedding"], dict[str, Any]], Awaitable[dict[str, Any]]]

log = logging.getLogger("gpufleet.gateway")

EMBED_BATCH = 8  # examples per /v1/embeddings call while warming up
# At most this many `auto` requests ask the model at once; the others wait QUEUE_WAIT_S for a turn, then the
# rules decide (issue 21: 200 at once each waited the full timeout_s, and then switched the model off for all).
MAX_CONCURRENT_CALLS = 8
QUEUE_WAIT_S = 0.05
RETRY_WARMUP_S = 30.0  # a failed warm-up (the model not up yet, an error) is tried again after this
_LOG_EVERY_S = 60.0  # fallbacks are logged at most this often; the metric counts every one
_CACHE_FORMAT = 1


class ClassifierFailed(Exception):
    """The classifier model answered, but not with something usable."""


@dataclass(frozen=True)
class AutoDecision:
    """The tier for one `auto` request and who chose it ("knn", "judge", "rules (knn timed out)", ...)."""

    tier: Tier
    by: str


def at_least_moderate_when_thinking(tier: Tier, rules_signals: tuple[str, ...]) -> Tier:
    """A request that asks for thinking never goes to the small model, whoever classified it (as with the rules)."""
    return Tier.MODERATE if tier is Tier.ROUTINE and "think_hint" in rules_signals else tier


def examples_cache_key(model_settings: list[dict[str, Any]], examples: bytes) -> str:
    """Names the cached example vectors: what the embedding model is, which examples, how they are cut."""
    material = orjson.dumps(
        {
            "format": _CACHE_FORMAT,
            "models": model_settings,
            "chars": EMBED_CHARS,
            "examples": hashlib.sha256(examples).hexdigest(),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(material).hexdigest()[:32]


class ModelTierClassifier:
    """The `auto` tier from a model (kNN over embeddings, or an LLM judge), with the rules as the fallback."""

    def __init__(
        self,
        settings: AutoModelClassifier,
        rules: ComplexityClassifier,
        *,
        call: InternalCall,
        table: ModelTable,
        metrics: RouterMetrics,
        cooldown_s: float,
        models: Mapping[str, Any],
    ) -> None:
        self._call_model = call
        self._table = table
        self._metrics = metrics
        self._models = models
        self.settings = settings
        self._rules = rules
        self._knn: KnnTierClassifier | None = None
        self._warmup: asyncio.Task[None] | None = None
        self._last_log = 0.0
        # After a timeout or an error the model is skipped for the router's cooldown: a hung classifier must
        # not add `timeout_s` to every `auto` request.
        self._cooldown_s = cooldown_s
        self._skip_until = 0.0
        self._turns = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        self._asking = 0  # calls to the model in progress
        self._turned_away = 0  # requests the bound sent to the rules ("busy"), ever
        self.state: Literal["warming", "ready", "retrying"] = "warming" if settings.kind == "knn" else "ready"
        self.last_error: str | None = None
        self.examples = Path(settings.examples).expanduser() if settings.examples else SHIPPED

    @property
    def kind(self) -> str:
        return self.settings.kind

    def start(self) -> None:
        """Begin embedding the kNN examples in the background (a judge needs nothing up front)."""
        if self.settings.kind == "knn" and self._warmup is None:
            self._warmup = asyncio.create_task(self._warm_up(), name="auto-knn-warmup")

    async def stop(self) -> None:
        if self._warmup is not None:
            self._warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmup
            self._warmup = None

    def status(self) -> dict[str, Any]:
        """For /status: which classifier, its model, whether it is ready, and its last failure."""
        cooling = max(0.0, self._skip_until - time.monotonic())
        body: dict[str, Any] = {
            "classifier": self.kind,
            "model": self.settings.model,
            "state": self.state,
            "timeout_s": self.settings.timeout_s,
            "last_error": self.last_error,
            "skipped_for_s": round(cooling, 1),
        }
        if self.settings.kind == "knn":
            body["examples"] = str(self.examples)
            body["k"] = self.settings.k
        return body

    async def route(self, payload: dict[str, Any]) -> Route:
        """The tier route for an `auto` request, marked with who decided."""
        decision = await self.decide(payload)
        return self._table.tier_route(decision.tier, by=decision.by)

    async def decide(self, payload: Mapping[str, Any]) -> AutoDecision:
        """Ask the model; on any failure the rules' tier, with the reason in `by`."""
        rules = self._rules.classify(payload)
        metrics = self._metrics
        if self.settings.kind == "knn" and self._knn is None:
            metrics.observe_classifier(self.kind, "warming")
            return AutoDecision(rules.tier, f"rules ({self.kind} {self.state.replace('retrying', 'unavailable')})")
        if time.monotonic() < self._skip_until:
            metrics.observe_classifier(self.kind, "cooling_down")
            return AutoDecision(rules.tier, f"rules ({self.kind} cooling down)")
        try:
            await asyncio.wait_for(self._turns.acquire(), QUEUE_WAIT_S)
        except TimeoutError:
            self._turned_away += 1
            metrics.observe_classifier(self.kind, "busy")
            return AutoDecision(rules.tier, f"rules ({self.kind} busy)")
        self._asking += 1
        try:
            return await self._decide_by_model(payload, rules.tier, rules.signals)
        finally:
            self._asking -= 1
            self._turns.release()

    async def _decide_by_model(
        self, payload: Mapping[str, Any], rules_tier: Tier, signals: tuple[str, ...]
    ) -> AutoDecision:
        started = time.perf_counter()
        # A call that shared the model with others, or during which requests were turned away, failed under a
        # burst: that does not switch the model off for everyone (see _fallback).
        alone, turned_away = self._asking == 1, self._turned_away
        try:
            tier = await asyncio.wait_for(self._ask(payload), self.settings.timeout_s)
        except TimeoutError:
            quiet = alone and self._turned_away == turned_away
            return self._fallback(rules_tier, "timeout", f"no answer within {self.settings.timeout_s:g} s", quiet)
        except ClassifierFailed as err:
            return self._fallback(rules_tier, "unreadable", str(err), alone and self._turned_away == turned_away)
        except (GpufleetError, ValueError, KeyError, IndexError, TypeError) as err:
            return self._fallback(
                rules_tier, "error", f"{type(err).__name__}: {err}", alone and self._turned_away == turned_away
            )
        self._metrics.observe_classifier(self.kind, "decided", time.perf_counter() - started)
        return AutoDecision(at_least_moderate_when_thinking(tier, signals), self.kind)

    def _fallback(self, tier: Tier, outcome: str, why: str, quiet: bool) -> AutoDecision:
        self._metrics.observe_classifier(self.kind, outcome)
        self.last_error = why
        now = time.monotonic()
        if quiet:
            # A model that fails on its own is skipped for the cooldown (a hung classifier must not add
            # timeout_s to every request); one that fails under a burst is not: the bound already keeps the
            # burst from waiting on it, and the next quiet request finds out whether it works.
            self._skip_until = now + self._cooldown_s
        if now - self._last_log >= _LOG_EVERY_S:
            self._last_log = now
            log.warning(
                "auto: the %s classifier (%s) failed, the rules decided: %s", self.kind, self.settings.model, why
            )
        return AutoDecision(tier, f"rules ({self.kind} {'timed out' if outcome == 'timeout' else outcome})")

    async def _ask(self, payload: Mapping[str, Any]) -> Tier:
        if self.settings.kind == "knn":
            assert self._knn is not None
            data = await self._call("embedding", {"model": self.settings.model, "input": [request_text(payload)]})
            return self._knn.classify_vector(data["data"][0]["embedding"])
        data = await self._call("chat", judge_body(payload, self.settings.model))
        content = data["choices"][0]["message"].get("content") or ""
        verdict = parse_judgement(content)
        if verdict is None:
            raise ClassifierFailed(f"the judge's answer names no tier: {content[:80]!r}")
        return verdict

    async def _call(self, kind: Literal["chat", "embedding"], body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed request to the classifier's model through the gateway's own routing."""
        return await self._call_model(kind, body)

    async def _warm_up(self) -> None:
        """Embed every example once (or load them from the cache), then serve kNN decisions."""
        while True:
            try:
                # Checked at config load; read again here for its current contents (and the cache key).
                items = load_labelled(self.examples)
                cache = self._cache_file()
                vectors = _read_vectors(cache, len(items))
                if vectors is None:
                    vectors = await self._embed_all([request_text(item["request"]) for item in items])
                    _write_vectors(cache, vectors)
                break
            except (GpufleetError, ClassifierFailed, OSError, ValueError, KeyError, IndexError, TypeError) as err:
                self.state, self.last_error = "retrying", f"embedding the examples: {err}"
                log.warning(
                    "auto: cannot embed the kNN examples with %s (%s); the rules decide; retrying in %g s",
                    self.settings.model,
                    err,
                    RETRY_WARMUP_S,
                )
                await asyncio.sleep(RETRY_WARMUP_S)
        examples = [(vector, Tier(item["tier"])) for vector, item in zip(vectors, items, strict=True)]
        self._knn = KnnTierClassifier(examples, k=self.settings.k)
        self.state, self.last_error = "ready", None
        log.info("auto: kNN classifier ready (%d examples embedded by %s)", len(examples), self.settings.model)

    async def _embed_all(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_BATCH):
            data = await self._call(
                "embedding", {"model": self.settings.model, "input": texts[start : start + EMBED_BATCH]}
            )
            vectors += [item["embedding"] for item in sorted(data["data"], key=lambda item: item["index"])]
        problem = vectors_problem(vectors, len(texts))
        if problem is not None:  # never cache what the vote cannot use: the cache would keep it across restarts
            raise ClassifierFailed(f"{self.settings.model}'s embeddings of the examples: {problem}")
        return vectors

    def _cache_file(self) -> Path:
        route = self._table.resolve(self.settings.model)
        models = [self._models[c.target.model].model_dump(mode="json") for group in route.groups for c in group]
        key = examples_cache_key(models, self.examples.read_bytes())
        return paths.cache_root() / "auto-knn" / f"{key}.json"


def _read_vectors(path: Path, count: int) -> list[list[float]] | None:
    """Cached example vectors, or None when absent or unusable (they are then embedded again)."""
    try:
        vectors = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return vectors if vectors_problem(vectors, count) is None else None


def vectors_problem(vectors: Any, count: int) -> str | None:
    """What makes `vectors` unusable as `count` example embeddings (None: usable): one non-empty list of
    numbers per example, all of one length."""
    if not isinstance(vectors, list) or len(vectors) != count:
        return f"expected {count} vectors, got {len(vectors) if isinstance(vectors, list) else type(vectors).__name__}"
    lengths = set()
    for i, vector in enumerate(vectors):
        if (
            not isinstance(vector, list)
            or not vector
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in vector)
        ):
            return f"vector {i} is not a non-empty list of numbers"
        lengths.add(len(vector))
    return None if len(lengths) == 1 else f"vectors of different lengths: {sorted(lengths)}"


def _write_vectors(path: Path, vectors: list[list[float]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(orjson.dumps(vectors))
        partial.replace(path)  # a reader never sees half a file
    except OSError as err:  # a read-only cache only costs the next start a re-embedding
        log.warning("auto: cannot cache the kNN example vectors in %s: %s", path, err)
