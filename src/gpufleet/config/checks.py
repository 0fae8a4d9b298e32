"""Checks over the whole config: unique served names, references that exist, no fallback cycle, swap budgets.

Each problem is a ValueError whose message starts with the key path (`routes.x.targets: …`), which the loader
turns into `file: key path: reason`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gpufleet.config.common import NAME_PATTERN
from gpufleet.config.models import ModelConfig, VllmModel
from gpufleet.config.nodes import check_nodes
from gpufleet.config.routing import AutoModelClassifier, PersonaConfig, RouteConfig, RouterConfig, SwapGroupConfig
from gpufleet.model_names import name_problem


def check_config(
    models: Mapping[str, ModelConfig],
    routes: Mapping[str, RouteConfig],
    personas: Mapping[str, PersonaConfig],
    router: RouterConfig,
    swap_groups: Mapping[str, SwapGroupConfig],
) -> None:
    """The whole config's checks, in the order a reader fixes them: names, nodes, references, swap groups."""
    if not models:
        raise ValueError("models: at least one model is required")
    seen: dict[str, str] = {}

    def claim(served: str, owner: str) -> None:
        if not re.match(NAME_PATTERN, served):
            raise ValueError(f"{owner}: {served!r} is not a valid model name")
        if (problem := name_problem(served)) is not None:  # files are named after models (issue 20)
            raise ValueError(f"{owner}: model name {served!r} {problem}; use plain segments like Org/Model")
        if served in seen and seen[served] != owner:
            raise ValueError(f"{owner}: name {served!r} is already used by {seen[served]}")
        seen[served] = owner

    for name, model in models.items():
        for served in (name, *model.aliases):
            claim(served, f"models.{name}")
        if isinstance(model, VllmModel):
            check_nodes(name, model)
    for name, route in routes.items():
        for served in (name, *route.aliases):
            claim(served, f"routes.{name}")
    for name in personas:
        claim(name, f"personas.{name}")
    if router.auto is not None:
        claim("auto", "router.auto")
    _check_references(models, routes, personas, router, seen)
    _check_swap_groups(models, swap_groups)


def _canonical(name: str, seen: dict[str, str]) -> str | None:
    """'models.x' / 'routes.y' owning a served name (alias → its owner), None when unknown."""
    return seen.get(name)


def _check_references(
    models: Mapping[str, ModelConfig],
    routes: Mapping[str, RouteConfig],
    personas: Mapping[str, PersonaConfig],
    router: RouterConfig,
    seen: dict[str, str],
) -> None:
    """Every name a route, fallback, persona or tier mentions exists, and fallback chains have no cycle."""

    def must_exist(name: str, where: str, *, allow_personas: bool = False) -> str:
        owner = _canonical(name, seen)
        if owner is None or (owner.startswith("personas.") and not allow_personas) or owner == "router.auto":
            raise ValueError(f"{where}: unknown model or route {name!r}")
        return owner

    edges: dict[str, list[str]] = {}
    for name, model in models.items():
        edges[f"models.{name}"] = [must_exist(f, f"models.{name}.fallbacks") for f in model.fallbacks]
    for name, route in routes.items():
        for target in route.targets:
            if not must_exist(target, f"routes.{name}.targets").startswith("models."):
                raise ValueError(f"routes.{name}.targets: {target!r} is a route; targets must be models")
        # A route's targets are replicas: their own fallbacks are not followed, the route's are.
        edges[f"routes.{name}"] = [must_exist(f, f"routes.{name}.fallbacks") for f in route.fallbacks]
    for name, persona in personas.items():
        must_exist(persona.route, f"personas.{name}.route")
    auto = router.auto
    if auto is not None:
        for tier in ("routine", "moderate", "complex"):
            must_exist(getattr(auto, tier), f"router.auto.{tier}")
        if isinstance(auto.classifier, AutoModelClassifier):
            must_exist(auto.classifier.model, "router.auto.classifier.model")
    _refuse_cycles(edges)


def _refuse_cycles(edges: dict[str, list[str]]) -> None:
    """A fallback chain that leads back to itself would loop: name the cycle."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = " → ".join([*path[path.index(node) :], node])
            raise ValueError(f"{path[0]}.fallbacks: fallback cycle {cycle}")
        if node in done:
            return
        for nxt in edges.get(node, []):
            visit(nxt, [*path, node])
        done.add(node)

    for node in edges:
        visit(node, [])


def _check_swap_groups(models: Mapping[str, ModelConfig], swap_groups: Mapping[str, SwapGroupConfig]) -> None:
    """Members of a budgeted swap group declare memory_mib, and each fits the budget on its own."""
    for name, model in models.items():
        group_name = model.swap_group
        if group_name is None:
            continue
        if model.engine == "remote":
            raise ValueError(f"models.{name}.swap_group: a remote model has no engine to swap")
        group = swap_groups.get(group_name)
        if group is None or group.memory_mib is None:
            continue
        if model.memory_mib is None:
            raise ValueError(f"models.{name}.memory_mib: required in swap group {group_name!r}, which has a budget")
        if model.memory_mib > group.memory_mib:
            raise ValueError(
                f"models.{name}.memory_mib: {model.memory_mib} MiB exceeds swap group "
                f"{group_name!r}'s budget of {group.memory_mib} MiB"
            )
