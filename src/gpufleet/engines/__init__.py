"""Engines: one module per engine kind, each resolving a model config once and turning it into a LaunchSpec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpufleet.config import LlamaCppModel, TransformersModel, VllmModel
from gpufleet.engines.base import Engine, LaunchSpec
from gpufleet.engines.llamacpp import LlamaCppEngine
from gpufleet.engines.transformers_engine import TransformersEngine
from gpufleet.engines.vllm_engine import VllmEngine
from gpufleet.errors import ConfigError, GpufleetError

# The configs of the models whose engine process the supervisor runs.
ManagedModel = LlamaCppModel | VllmModel | TransformersModel

# Engine kinds whose processes the supervisor manages; `remote` models have no process.
# The kind is chosen by the config's `engine:` key at run time, so the mapping cannot keep each engine's types.
MANAGED_ENGINES: dict[str, Engine[Any, Any]] = {
    "llamacpp": LlamaCppEngine(),
    "vllm": VllmEngine(),
    "transformers": TransformersEngine(),
}


def resolve_launches(models: Mapping[str, ManagedModel], *, file: str = "<config>") -> dict[str, object]:
    """Resolve every managed model's launch once (`gpufleet serve`, before anything starts), so a model that can
    never start (no vLLM, a plan that does not fit, a flag its vLLM refuses) is a ConfigError naming its key
    instead of a 503 at its first request. Blocking: vLLM version probes run the engine's python."""
    resolved: dict[str, object] = {}
    for name, model in models.items():
        try:
            resolved[name] = MANAGED_ENGINES[model.engine].resolve(name, model)
        except GpufleetError as err:  # EngineError, ModelSourceError (a .gguf), PlanError ...
            raise ConfigError(str(err), file=file, key_path=f"models.{name}") from None
    return resolved


__all__ = ["MANAGED_ENGINES", "Engine", "LaunchSpec", "ManagedModel", "resolve_launches"]
