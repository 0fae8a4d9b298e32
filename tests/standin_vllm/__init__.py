"""Config helper for the STAND-IN vLLM in this directory (tests only; see README.md, not vLLM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

STANDIN_PATH = Path(__file__).resolve().parent


def standin_model(env: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    """A `vllm` model config that launches the stand-in (with the test interpreter) instead of vLLM."""
    model: dict[str, Any] = {
        "engine": "vllm",
        "model": "/models/Qwen3-8B-AWQ",
        "python": sys.executable,
        "device": "cuda",
        "max_model_len": 2048,
        "ready_timeout_s": 60,
        "stop_grace_s": 5,
        "env": {"PYTHONPATH": str(STANDIN_PATH), "STANDIN_VLLM_PHASE_DELAY_S": "0.05", **(env or {})},
    }
    model.update(overrides)
    return model
