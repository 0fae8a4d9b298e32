"""Name resolution: exact served names and aliases → a Target (pure; no I/O).

vLLM answers 404 for any name not in --served-model-name (seed 002's lesson: a LiteLLM alias had to paper
over it); here every alias resolves, the upstream always receives the name it expects, and an unknown
name gets a 404 that lists what is available.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from gpufleet.config import Config, RemoteModel
from gpufleet.engines.remote import RemoteUpstream, remote_upstream
from gpufleet.errors import ModelNotFound


@dataclass(frozen=True)
class Target:
    """One place that can serve a model: a managed engine (by model name) or a remote upstream."""

    model: str  # the configured model name (what the client is told it got)
    upstream_model: str  # the name the engine/upstream expects in the request body
    remote: RemoteUpstream | None = None

    @property
    def label(self) -> str:
        """Short description for headers and metrics."""
        return f"remote:{self.remote.base_url}" if self.remote else f"local:{self.model}"


class ModelTable:
    """The names a client may ask for, and what each resolves to."""

    def __init__(self, config: Config) -> None:
        self._targets: dict[str, Target] = {}
        self._aliases: dict[str, str] = {}
        for name, model in config.models.items():
            if isinstance(model, RemoteModel):
                upstream = remote_upstream(name, model)
                target = Target(model=name, upstream_model=upstream.upstream_model, remote=upstream)
            else:
                target = Target(model=name, upstream_model=name)
            self._targets[name] = target
            for alias in model.aliases:
                self._aliases[alias] = name
        self._created = 0

    @property
    def names(self) -> list[str]:
        """Every name a client may use (models first, then aliases)."""
        return [*self._targets, *self._aliases]

    def resolve(self, requested: str) -> Target:
        """The target for `requested`, or ModelNotFound naming it and listing the available names."""
        target = self._targets.get(requested)
        if target is not None:
            return target
        canonical = self._aliases.get(requested)
        if canonical is not None:
            return self._targets[canonical]
        close = difflib.get_close_matches(requested, self.names, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelNotFound(
            f"The model {requested!r} does not exist.{hint} Available models: {', '.join(self.names)}",
            param="model",
        )

    def listing(self) -> list[dict[str, Any]]:
        """OpenAI `/v1/models` data: every model, and every alias marked as such."""
        data: list[dict[str, Any]] = [
            {"id": name, "object": "model", "created": self._created, "owned_by": "gpufleet"}
            for name in self._targets
        ]
        data += [
            {"id": alias, "object": "model", "created": self._created, "owned_by": "gpufleet", "alias_of": target}
            for alias, target in self._aliases.items()
        ]
        return data
