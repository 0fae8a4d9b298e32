"""The seed deployments as plans, built in one place for the planner, launch-plan and doctor tests.

Each builder is one seed document's setup (docs/planner.md, "Worked examples, one per seed"). Keyword
overrides go to `plan_model` on top of that setup, so a test spells out only what it changes.
"""

from __future__ import annotations

from typing import Any

from gpufleet.catalog import ModelSpec, get_gpu, get_model
from gpufleet.planner import Plan, plan_model


def spec(name: str) -> ModelSpec:
    return get_model(name).spec


def _plan(model: str, gpu: str, setup: dict[str, Any], overrides: dict[str, Any]) -> Plan:
    return plan_model(spec(model), get_gpu(gpu), **{**setup, **overrides})


def seed_001_plan(**overrides: Any) -> Plan:
    """ADR 001's final setup: Qwen3-32B-AWQ on one RTX 3090 (24 GB), awq_marlin, no offload, 8192 tokens.

    The utilization is left at gpufleet's default; the ADR ran vLLM 0.8.5, whose default was 0.90.
    """
    return _plan("qwen3-32b", "rtx3090", {"quantization": "awq", "context": 8192}, overrides)


def seed_001_offload_plan(vllm_version: str, **overrides: Any) -> Plan:
    """ADR 001's first attempt: the same card at 0.90 with 16384 tokens, made to fit with
    --cpu-offload-gb on WSL2 (no pinned memory). Whether that can run depends on the vLLM version."""
    setup = {
        "quantization": "awq",
        "gpu_memory_utilization": 0.90,
        "context": 16384,
        "allow_cpu_offload": True,
        "host_wsl2": True,
        "vllm_version": vllm_version,
    }
    return _plan("qwen3-32b", "rtx3090", setup, overrides)


def seed_002_plan(**overrides: Any) -> Plan:
    """Seed 002: Qwen3-8B-AWQ on an RTX 3060 12GB (k3s) at 0.90 utilization with 8192 tokens."""
    setup = {"quantization": "awq", "gpu_memory_utilization": 0.90, "context": 8192}
    return _plan("qwen3-8b", "rtx3060", setup, overrides)


def seed_003_plan(**overrides: Any) -> Plan:
    """Seed 003: Qwen2.5-Coder-32B-Instruct in bf16, TP=2 on two 80 GB A100s, 131072 tokens (YaRN x4)."""
    return _plan("qwen2.5-coder-32b-instruct", "a100-80gb", {"tensor_parallel": 2, "context": 131072}, overrides)


def seed_004_plan(**overrides: Any) -> Plan:
    """Seed 004: Qwen3-235B-A22B AWQ on two DGX Sparks (GB10, Ray, TP=2) at 0.75 utilization, 8192 tokens."""
    setup = {"quantization": "awq", "tensor_parallel": 2, "gpu_memory_utilization": 0.75, "context": 8192}
    return _plan("qwen3-235b-awq", "gb10", setup, overrides)
