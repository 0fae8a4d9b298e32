"""A vLLM engine's launch as the supervisor takes it, for the launch tests (vLLM, Ray, emitted configs, planner).

spec = vllm_spec("m", vllm_config(model="Qwen/Qwen3-8B-AWQ", plan=True, gpu="rtx3060"), 41234)
"""

from __future__ import annotations

from typing import Any

from gpufleet.config import Config, VllmModel, parse_config
from gpufleet.engines.base import LaunchSpec
from gpufleet.engines.vllm_engine import VllmEngine

# Flags the seed deployments passed that current vLLM refuses (engines/vllm_flags.py REMOVED_FLAGS): a planned
# launch never carries them.
SEED_REMOVED_FLAGS = ("--swap-space", "--enable-reasoning", "--rope-scaling")


def vllm_spec(name: str, model: VllmModel, port: int) -> LaunchSpec:
    """The engine's two steps, as the supervisor takes them: resolve once, then the spec at a port."""
    engine = VllmEngine()
    return engine.launch_spec(name, model, engine.resolve(name, model), port)


def vllm_config(name: str = "m", **fields: Any) -> VllmModel:
    """One `engine: vllm` model parsed from `fields` as a config's models.<name> entry."""
    config: Config = parse_config({"models": {name: {"engine": "vllm", **fields}}})
    model = config.models[name]
    assert isinstance(model, VllmModel)
    return model
