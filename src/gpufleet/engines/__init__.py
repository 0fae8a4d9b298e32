"""Engines: one module per engine kind, each turning a model config into a LaunchSpec."""

from __future__ import annotations

from gpufleet.engines.base import Engine, LaunchSpec
from gpufleet.engines.llamacpp import LlamaCppEngine
from gpufleet.engines.transformers_engine import TransformersEngine
from gpufleet.engines.vllm_engine import VllmEngine

# Engine kinds whose processes the supervisor manages; `remote` models have no process.
MANAGED_ENGINES: dict[str, Engine] = {
    "llamacpp": LlamaCppEngine(),
    "vllm": VllmEngine(),
    "transformers": TransformersEngine(),
}

__all__ = ["MANAGED_ENGINES", "Engine", "LaunchSpec"]
