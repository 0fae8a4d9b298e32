"""Name resolution: served names, aliases, routes, personas and `auto` → a Route (pure; built once, no I/O).

vLLM answers 404 for any name not in --served-model-name (seed 002's lesson: a LiteLLM alias had to paper
over it); here every alias resolves, the upstream always receives the name it expects, and an unknown
name gets a 404 that lists what is available.

A Route is everything the relay needs to serve one name, precomputed at load so the hot path only looks
things up: its candidate groups (the replicas first, then each fallback in order; a fallback that is a
route contributes its replicas as one group) and, per candidate, the merged request defaults and dialect.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpufleet.config import Config, LlamaCppModel, RemoteModel, RouteDefaults, VllmModel
from gpufleet.dialects import DialectDefaults
from gpufleet.engines.remote import RemoteUpstream, remote_upstream
from gpufleet.errors import ModelNotFound
from gpufleet.redact import redact_url

if TYPE_CHECKING:
    from gpufleet.router.classifier import ComplexityClassifier, TierDecision


@dataclass(frozen=True)
class Target:
    """One place that can serve a model: a managed engine (by model name) or a remote upstream."""

    model: str  # the configured model name (what the client is told it got)
    upstream_model: str  # the name the engine/upstream expects in the request body
    remote: RemoteUpstream | None = None
    max_context: int | None = None  # tokens one request may use, where gpufleet knows it (llama.cpp: per slot)
    text_only: bool = False  # known to take no images or audio (the embedded llama.cpp and transformers engines)
    caps_max_tokens: bool = False  # the gateway caps max_tokens at max_context (llama.cpp; vLLM answers 400 itself)

    @property
    def label(self) -> str:
        """Short description for headers and metrics."""
        return f"remote:{redact_url(self.remote.base_url)}" if self.remote else f"local:{self.model}"


@dataclass(frozen=True)
class Candidate:
    """A target as reached through one route: with the request defaults and dialect that apply there."""

    target: Target
    defaults: RouteDefaults
    dialect: DialectDefaults
    has_defaults: bool  # any request-level default to apply (skips the work on the hot path when not)


@dataclass(frozen=True)
class Route:
    """What one requested name resolves to."""

    name: str  # the model, route or persona name (aliases resolved)
    groups: tuple[tuple[Candidate, ...], ...]  # replicas first, then each fallback
    affinity: bool = True
    tier: str | None = None  # set when reached through `auto`
    tier_by: str | None = None  # who chose the tier: "rules", "knn", "judge", "rules (knn timed out)", ...
    resumable: frozenset[str] = frozenset()  # fallback models that may continue a broken stream (resume_fallbacks)

    @property
    def primary(self) -> Target:
        """The first target (what the request is for, before any fallback)."""
        return self.groups[0][0].target


_EMPTY = RouteDefaults()
_REQUEST_FIELDS = tuple(f for f in RouteDefaults.model_fields if f not in ("thinking", "max_reasoning_tokens"))


def merge_defaults(base: RouteDefaults, over: RouteDefaults) -> RouteDefaults:
    """`over`'s set fields win over `base`'s."""
    changes = {k: v for k, v in over.model_dump(exclude_none=True).items()}
    return base.model_copy(update=changes) if changes else base


def _dialect_with(dialect: DialectDefaults, defaults: RouteDefaults) -> DialectDefaults:
    changes: dict[str, Any] = {}
    if defaults.thinking is not None:
        changes["thinking_default"] = defaults.thinking
    if defaults.max_reasoning_tokens is not None:
        changes["max_reasoning_tokens"] = defaults.max_reasoning_tokens
    return dataclasses.replace(dialect, **changes) if changes else dialect


class ModelTable:
    """The names a client may ask for, and the Route each resolves to."""

    def __init__(self, config: Config, dialects: Mapping[str, DialectDefaults] | None = None) -> None:
        self._config = config
        self._dialects = dict(dialects or {})
        self.targets: dict[str, Target] = {}
        for name, model in config.models.items():
            if isinstance(model, RemoteModel):
                upstream = remote_upstream(name, model)
                self.targets[name] = Target(model=name, upstream_model=upstream.upstream_model, remote=upstream)
            elif isinstance(model, LlamaCppModel):
                # llama.cpp splits its context between the parallel slots; it runs without a vision projector.
                self.targets[name] = Target(
                    model=name,
                    upstream_model=name,
                    text_only=True,
                    max_context=model.context // model.parallel,
                    caps_max_tokens=True,
                )
            elif isinstance(model, VllmModel):
                self.targets[name] = Target(model=name, upstream_model=name, max_context=model.max_model_len)
            else:  # transformers: installed without torchvision, so no image processor
                self.targets[name] = Target(model=name, upstream_model=name, text_only=True)
        self._aliases: dict[str, str] = {}
        for name, model in config.models.items():
            self._aliases.update(dict.fromkeys(model.aliases, name))
        for name, route_cfg in config.routes.items():
            self._aliases.update(dict.fromkeys(route_cfg.aliases, name))
        self._routes: dict[str, Route] = {}
        for name in config.models:
            self._routes[name] = self._build(name, _EMPTY)
        for name in config.routes:
            self._routes[name] = self._build(name, _EMPTY)
        for name, persona in config.personas.items():
            extra = merge_defaults(persona.defaults, RouteDefaults(system_prompt=persona.system_prompt))
            base = self._build(self._canonical(persona.route), extra)
            self._routes[name] = dataclasses.replace(base, name=name)
        self._tiers: dict[str, Route] = {}
        self.classifier: ComplexityClassifier | None = None
        auto = config.router.auto
        if auto is not None:
            from gpufleet.router.classifier import ComplexityClassifier

            # Weights were checked against the classifier's signals when the config was loaded.
            self.classifier = ComplexityClassifier(auto.moderate_at, auto.complex_at, auto.weights)
            for tier in ("routine", "moderate", "complex"):
                route = self._routes[self._canonical(getattr(auto, tier))]
                self._tiers[tier] = dataclasses.replace(route, tier=tier, tier_by="rules")
        self._created = 0

    def _canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def _build(self, name: str, extra: RouteDefaults) -> Route:
        """Expand `name` into candidate groups; `extra` (persona) applies over the route's own defaults."""
        groups: list[tuple[Candidate, ...]] = []
        seen: set[str] = set()

        def expand(entry: str, over: RouteDefaults) -> None:
            entry = self._canonical(entry)
            route_cfg = self._config.routes.get(entry)
            if route_cfg is not None:
                layered = merge_defaults(route_cfg.defaults, over)
                group = [self._candidate(m, layered) for m in route_cfg.targets if m not in seen]
                seen.update(route_cfg.targets)
                if group:
                    groups.append(tuple(group))
                for fallback in route_cfg.fallbacks:
                    expand(fallback, over)
                return
            if entry in seen:
                return
            seen.add(entry)
            groups.append((self._candidate(entry, over),))
            for fallback in self._config.models[entry].fallbacks:
                expand(fallback, over)

        expand(name, extra)
        route_cfg = self._config.routes.get(name)
        resumable: set[str] = set()
        for entry in route_cfg.resume_fallbacks if route_cfg else ():
            entry = self._canonical(entry)
            inner = self._config.routes.get(entry)
            resumable.update(inner.targets if inner is not None else (entry,))
        return Route(
            name=name,
            groups=tuple(groups),
            affinity=route_cfg.affinity if route_cfg else True,
            resumable=frozenset(resumable),
        )

    def _candidate(self, model: str, over: RouteDefaults) -> Candidate:
        defaults = merge_defaults(self._config.models[model].defaults, over)
        dialect = _dialect_with(self._dialects.get(model, DialectDefaults()), defaults)
        has = any(getattr(defaults, f) is not None for f in _REQUEST_FIELDS)
        return Candidate(target=self.targets[model], defaults=defaults, dialect=dialect, has_defaults=has)

    @property
    def names(self) -> list[str]:
        """Every name a client may use (models and routes first, then aliases, personas, auto)."""
        names = [*self._config.models, *self._config.routes, *self._aliases, *self._config.personas]
        return [*names, "auto"] if self._tiers else names

    def resolve(self, requested: str, payload: dict[str, Any] | None = None) -> Route:
        """The Route for `requested`, or ModelNotFound naming it and listing the available names.

        `auto` needs the request `payload`: the complexity classifier picks the tier's route.
        """
        route = self._routes.get(requested)
        if route is not None:
            return route
        canonical = self._aliases.get(requested)
        if canonical is not None:
            return self._routes[canonical]
        if requested == "auto" and self.classifier is not None:
            decision = self.classify(payload or {})
            return self._tiers[decision.tier.value]
        close = difflib.get_close_matches(requested, self.names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelNotFound(
            f"The model {requested!r} does not exist.{hint} Available models: {', '.join(self.names)}",
            param="model",
        )

    def tier_route(self, tier: str, *, by: str) -> Route:
        """The route of an `auto` tier chosen outside the rules (a model classifier), marked with who chose it."""
        return dataclasses.replace(self._tiers[tier], tier_by=by)

    def classify(self, payload: dict[str, Any]) -> TierDecision:
        """The `auto` tier decision for one request (requires router.auto in the config)."""
        assert self.classifier is not None
        return self.classifier.classify(payload)

    def listing(self) -> list[dict[str, Any]]:
        """OpenAI `/v1/models` data: models and routes, aliases marked as such, personas, `auto`."""

        def entry(name: str, **extra: Any) -> dict[str, Any]:
            return {"id": name, "object": "model", "created": self._created, "owned_by": "gpufleet", **extra}

        def window(name: str) -> dict[str, Any]:
            # vLLM's own /v1/models says max_model_len; clients (and `gpufleet launch`) size their context from it.
            context = self.targets[name].max_context
            return {"max_model_len": context} if context is not None else {}

        data = [entry(name, **window(name)) for name, model in self._config.models.items() if model.listed]
        data += [entry(name) for name, route in self._config.routes.items() if route.listed]
        data += [entry(alias, alias_of=target) for alias, target in self._aliases.items()]
        data += [entry(name, persona_of=p.route) for name, p in self._config.personas.items()]
        if self._tiers:
            auto = self._config.router.auto
            assert auto is not None
            by = auto.classifier if isinstance(auto.classifier, str) else auto.classifier.kind
            data.append(entry("auto", tiers={t: r.name for t, r in self._tiers.items()}, classifier=by))
        return data
