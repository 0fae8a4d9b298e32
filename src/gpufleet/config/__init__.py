"""The `gpufleet.yaml` schema (pydantic, unknown keys rejected) and its loader.

Every problem is reported as a ConfigError naming the file, the key path and the reason, e.g.
`gpufleet.yaml: models.qwen.context: Input should be greater than 0`.

    server:
      host: 127.0.0.1
      port: 8000
      api_keys: ["${GPUFLEET_KEY}"]
    models:
      qwen2.5-coder-1.5b-instruct:
        engine: llamacpp
        source: package:qwen2.5-coder-1.5b-instruct
        aliases: [qwen-coder]
      rig:
        engine: remote
        url: http://10.0.0.5:8000/v1
        upstream_model: Qwen/Qwen3-32B-AWQ

The package, bottom up (it imports only errors, redact, model_packages, dialects and tiers, never a layer above):
- common.py   — the strict base model, the served-name rule, RouteDefaults, RestartPolicy
- models.py   — one `models:` entry per engine (LlamaCppModel, RemoteModel, VllmModel, TransformersModel)
- nodes.py    — checks of a multi-node vLLM model (`nodes:`)
- routing.py  — routes, personas, `router:` (fallback, `auto` tiers), swap groups
- checks.py   — checks over the whole config (unique names, references, fallback cycles, swap budgets)
- schema.py   — ServerConfig and Config (the whole file)
- load.py     — YAML reading, `${VAR}` expansion, pydantic errors turned into key paths
"""

from __future__ import annotations

from gpufleet.config.common import RestartPolicy, RouteDefaults
from gpufleet.config.load import DEFAULT_CONFIG, load_config, parse_config
from gpufleet.config.models import (
    LlamaCppModel,
    ModelConfig,
    RayClusterConfig,
    RemoteModel,
    TransformersModel,
    VllmDocker,
    VllmModel,
)
from gpufleet.config.routing import (
    AutoModelClassifier,
    AutoTiers,
    PersonaConfig,
    RouteConfig,
    RouterConfig,
    SwapGroupConfig,
)
from gpufleet.config.schema import Config, ServerConfig

__all__ = [
    "DEFAULT_CONFIG",
    "AutoModelClassifier",
    "AutoTiers",
    "Config",
    "LlamaCppModel",
    "ModelConfig",
    "PersonaConfig",
    "RayClusterConfig",
    "RemoteModel",
    "RestartPolicy",
    "RouteConfig",
    "RouteDefaults",
    "RouterConfig",
    "ServerConfig",
    "SwapGroupConfig",
    "TransformersModel",
    "VllmDocker",
    "VllmModel",
    "load_config",
    "parse_config",
]
