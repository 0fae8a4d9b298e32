"""Version-dependent vLLM behaviour the plans depend on, in one place (vllm-facts.md §2, §4)."""

from __future__ import annotations

import re

DEFAULT_VLLM_VERSION = "0.33.0"  # newest release read for vllm-facts.md


def version_tuple(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a vLLM version string: '0.8.5.post1' -> (0, 8, 5)."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not match:
        raise ValueError(f"not a vLLM version: {version!r} (expected e.g. 0.26.0)")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def has_v0_engine(version: str) -> bool:
    """V0 (and the VLLM_USE_V1 switch) was removed in v0.11; seed 001's VLLM_USE_V1=0 trick needs < 0.11."""
    return version_tuple(version) < (0, 11, 0)


def yarn_key(version: str) -> str:
    """hf-overrides key for RoPE scaling: 'rope_scaling' in the v0.10 docs, 'rope_parameters' now.

    The switch followed transformers 5's rename; 0.12 is the assumed first release with it.
    """
    return "rope_scaling" if version_tuple(version) < (0, 12, 0) else "rope_parameters"


def yarn_needs_max_position_override(version: str) -> bool:
    """0.33 stopped deriving max length as original * factor for YaRN (config/model.py)."""
    return version_tuple(version) >= (0, 33, 0)


def is_v1_default(version: str) -> bool:
    """The V1 engine is the default from 0.8.0 (V0 before; V0 removed in 0.11)."""
    return version_tuple(version) >= (0, 8, 0)


def has_gpu_sized_batch_defaults(version: str) -> bool:
    """get_batch_defaults sizes max_num_batched_tokens/max_num_seqs by GPU memory from 0.9."""
    return version_tuple(version) >= (0, 9, 0)


def has_pre_017_profile_peak(version: str) -> bool:
    """0.15 and 0.16 profiled a much larger forward peak than 0.17+ (Qwen3-14B/H100: 5.64 vs 2.23 GiB).

    Measured on 0.15-0.18 only (llm-d-planner's version sweep); 0.8.5 logs fit without it, and
    0.9-0.14 are unmeasured, so they are planned like 0.8.
    """
    return (0, 15, 0) <= version_tuple(version) < (0, 17, 0)


def pytorch_sampler_by_default(version: str) -> bool:
    """'FlashInfer top-p/top-k sampling is available but disabled by default' (logged from 0.15 on
    in the sweep; 0.8.5 fits the FlashInfer sampler). 0.9-0.14 unmeasured, planned like 0.8."""
    return version_tuple(version) >= (0, 15, 0)


def budgets_cudagraphs(version: str) -> bool:
    """CUDA-graph memory is profiled and subtracted before the KV cache is sized from 0.21.

    vllm-facts.md §1 and LMCache#3430's 0.21 log: 'CUDA graph memory profiling is enabled
    (default since v0.21.0)'.
    """
    return version_tuple(version) >= (0, 21, 0)
