"""Version-dependent vLLM behaviour, in one table: what changed, and from which release (vllm-facts.md §2, §4).

Both the plans (planner/) and the command-line checks (engines/vllm_flags.py) read their versions from
`VLLM_FACTS`, so a fact is changed in one place.

    >>> since("v0_removed", "0.10.2"), since("v0_removed", "0.11.0")
    (False, True)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_VLLM_VERSION = "0.33.0"  # newest release read for vllm-facts.md

Version = tuple[int, int, int]


@dataclass(frozen=True)
class VersionFact:
    """Something vLLM does from `since` on (and did not before); `what` says what, and where it is recorded."""

    since: Version
    what: str


VLLM_FACTS: Mapping[str, VersionFact] = MappingProxyType(
    {
        "v1_default": VersionFact((0, 8, 0), "the V1 engine is the default (V0 before; V0 removed in 0.11)"),
        "gpu_sized_batch_defaults": VersionFact(
            (0, 9, 0), "get_batch_defaults sizes max_num_batched_tokens/max_num_seqs by GPU memory"
        ),
        "enable_reasoning_removed": VersionFact(
            (0, 10, 0), "--enable-reasoning is refused; --reasoning-parser NAME alone turns reasoning output on"
        ),
        "v0_removed": VersionFact(
            (0, 11, 0),
            "the V0 engine (and the VLLM_USE_V1 switch) is gone: seed 001's VLLM_USE_V1=0 trick needs < 0.11",
        ),
        "rope_parameters_key": VersionFact(
            (0, 12, 0), "--hf-overrides takes RoPE scaling as 'rope_parameters' (transformers 5's rename; 0.12 assumed)"
        ),
        "rope_flags_removed": VersionFact(
            (0, 13, 0), "--rope-scaling and --rope-theta are refused; RoPE settings go in --hf-overrides"
        ),
        "large_profile_peak": VersionFact(
            (0, 15, 0),
            "the profile run's forward peak is much larger (Qwen3-14B/H100: 5.64 vs 2.23 GiB; measured"
            " on 0.15-0.18 by llm-d-planner's sweep; 0.9-0.14 unmeasured, planned like 0.8)",
        ),
        "pytorch_sampler_default": VersionFact(
            (0, 15, 0), "'FlashInfer top-p/top-k sampling is available but disabled by default' (the PyTorch sampler)"
        ),
        "small_profile_peak": VersionFact((0, 17, 0), "the large profile peak of 0.15 and 0.16 is gone"),
        "swap_space_removed": VersionFact(
            (0, 18, 0), "--swap-space is refused (the V1 engine never swapped KV to CPU)"
        ),
        "non_torch_018": VersionFact(
            (0, 18, 0), "non-torch memory per GPU grows (planner/memory.py NON_TORCH_BYTES_018)"
        ),
        "cudagraphs_budgeted": VersionFact(
            (0, 21, 0),
            "CUDA-graph memory is profiled and subtracted before the KV cache is sized ('CUDA graph memory"
            " profiling is enabled (default since v0.21.0)', LMCache#3430)",
        ),
        "attention_backend_env_gone": VersionFact(
            (0, 32, 0), "VLLM_ATTENTION_BACKEND is not read (the backend is --attention-backend)"
        ),
        "yarn_no_multiply": VersionFact(
            (0, 33, 0), "max length is no longer original_max_position_embeddings * YaRN factor (config/model.py)"
        ),
    }
)


def version_tuple(version: str) -> Version:
    """(major, minor, patch) of a vLLM version string: '0.8.5.post1' -> (0, 8, 5)."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not match:
        raise ValueError(f"not a vLLM version: {version!r} (expected e.g. 0.26.0)")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def since(fact: str, version: str | Version) -> bool:
    """Whether vLLM `version` has `fact` (a key of VLLM_FACTS)."""
    parsed = version_tuple(version) if isinstance(version, str) else version
    return parsed >= VLLM_FACTS[fact].since


def has_v0_engine(version: str) -> bool:
    """V0 (and the VLLM_USE_V1 switch) was removed in v0.11; seed 001's VLLM_USE_V1=0 trick needs < 0.11."""
    return not since("v0_removed", version)


def yarn_key(version: str) -> str:
    """hf-overrides key for RoPE scaling: 'rope_scaling' in the v0.10 docs, 'rope_parameters' now."""
    return "rope_parameters" if since("rope_parameters_key", version) else "rope_scaling"


def yarn_needs_max_position_override(version: str) -> bool:
    """0.33 stopped deriving max length as original * factor for YaRN (config/model.py)."""
    return since("yarn_no_multiply", version)


def is_v1_default(version: str) -> bool:
    """The V1 engine is the default from 0.8.0 (V0 before; V0 removed in 0.11)."""
    return since("v1_default", version)


def has_gpu_sized_batch_defaults(version: str) -> bool:
    """get_batch_defaults sizes max_num_batched_tokens/max_num_seqs by GPU memory from 0.9."""
    return since("gpu_sized_batch_defaults", version)


def has_pre_017_profile_peak(version: str) -> bool:
    """0.15 and 0.16 profiled a much larger forward peak than 0.17+ (VLLM_FACTS 'large_profile_peak')."""
    return since("large_profile_peak", version) and not since("small_profile_peak", version)


def pytorch_sampler_by_default(version: str) -> bool:
    """The PyTorch sampler is the default from 0.15 (0.8.5 fits the FlashInfer sampler; 0.9-0.14 unmeasured)."""
    return since("pytorch_sampler_default", version)


def budgets_cudagraphs(version: str) -> bool:
    """CUDA-graph memory is profiled and subtracted before the KV cache is sized from 0.21."""
    return since("cudagraphs_budgeted", version)
