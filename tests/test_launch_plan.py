"""Launch plans: the exact `vllm serve` argv/env for each seed deployment, and no removed flags."""

from __future__ import annotations

import json

import pytest

from gpufleet.catalog import GIB, get_gpu
from gpufleet.errors import PlanError
from gpufleet.planner import LaunchPlan, plan_launch, plan_model
from gpufleet.planner.launch import launch_env
from tests.seed_plans import seed_001_offload_plan, seed_001_plan, seed_002_plan, seed_003_plan, seed_004_plan, spec
from tests.vllm_specs import SEED_REMOVED_FLAGS


def assert_no_removed_flags(launch: LaunchPlan) -> None:
    assert not any(a in SEED_REMOVED_FLAGS for a in launch.argv), launch.argv
    assert "VLLM_USE_V1" not in launch.env


def test_seed_001_3090_qwen3_32b_awq_8k_with_awq_marlin() -> None:
    """ADR 001's final setup: awq_marlin, no offload, no eager, 8192 context."""
    launch = plan_launch(seed_001_plan())
    assert launch.argv == [
        "Qwen/Qwen3-32B-AWQ",
        "--served-model-name",
        "qwen3-32b-awq",
        "--quantization",
        "awq_marlin",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.92",
        "--reasoning-parser",
        "qwen3",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    assert launch.env == {} and launch.served_model_name == "qwen3-32b-awq"
    assert_no_removed_flags(launch)


def test_seed_002_3060_qwen3_8b_awq_at_090_eager_8192() -> None:
    """Seed 002's args: --enforce-eager --quantization awq_marlin
    --gpu-memory-utilization 0.90 --max-model-len 8192."""
    launch = plan_launch(seed_002_plan(), served_model_name="Qwen/Qwen3-8B-AWQ")
    assert launch.argv == [
        "Qwen/Qwen3-8B-AWQ",
        "--served-model-name",
        "Qwen/Qwen3-8B-AWQ",
        "--quantization",
        "awq_marlin",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.9",
        "--enforce-eager",
        "--reasoning-parser",
        "qwen3",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    assert_no_removed_flags(launch)


def test_seed_003_tp2_coder_32b_on_two_80gb_gpus() -> None:
    launch = plan_launch(seed_003_plan(context=32768))
    assert launch.argv == [
        "Qwen/Qwen2.5-Coder-32B-Instruct",
        "--served-model-name",
        "qwen2.5-coder-32b-instruct",
        "--max-model-len",
        "32768",
        "--gpu-memory-utilization",
        "0.92",
        "--tensor-parallel-size",
        "2",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    assert_no_removed_flags(launch)


def _overrides(launch: LaunchPlan) -> dict[str, object]:
    return json.loads(launch.argv[launch.argv.index("--hf-overrides") + 1])  # type: ignore[no-any-return]


def test_seed_003_131072_uses_hf_overrides_yarn_with_max_position_on_033() -> None:
    """0.33 stopped deriving original*factor for yarn, so max_position_embeddings goes in the overrides."""
    launch = plan_launch(seed_003_plan(vllm_version="0.33.0"))
    assert _overrides(launch) == {
        "rope_parameters": {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 32768,
            "rope_theta": 1000000,
        },
        "max_position_embeddings": 131072,
    }
    assert launch.argv[launch.argv.index("--max-model-len") + 1] == "131072"
    assert_no_removed_flags(launch)


def test_yarn_overrides_follow_the_vllm_version() -> None:
    """0.26 derives 32768*4 itself (no max_position override); 0.10 still spelled it rope_scaling."""
    assert "max_position_embeddings" not in _overrides(plan_launch(seed_003_plan(vllm_version="0.26.0")))
    old = _overrides(plan_launch(seed_003_plan(vllm_version="0.10.2")))
    assert old == {
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        "rope_theta": 1000000,
    }


def test_seed_004_235b_tp2_over_ray_on_two_gb10_eager() -> None:
    """serve.sh without --swap-space (gone from vLLM) and with the catalog's hermes tool parser."""
    launch = plan_launch(seed_004_plan(), served_model_name="qwen3-235b-awq")
    assert launch.argv == [
        "QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
        "--served-model-name",
        "qwen3-235b-awq",
        "--quantization",
        "awq_marlin",
        "--max-model-len",
        "8192",
        "--gpu-memory-utilization",
        "0.75",
        "--tensor-parallel-size",
        "2",
        "--distributed-executor-backend",
        "ray",
        "--enforce-eager",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    ]
    assert_no_removed_flags(launch)


def test_seed_001_wsl2_cpu_offload_sets_vllm_use_v1_0_only_before_011() -> None:
    p = seed_001_offload_plan("0.8.5")
    launch = plan_launch(p)
    assert launch.env == {"VLLM_USE_V1": "0"}
    assert launch.argv[launch.argv.index("--cpu-offload-gb") + 1] == str(p.cpu_offload_bytes // GIB)
    linux = seed_001_offload_plan("0.26.0", host_wsl2=False)
    assert "--cpu-offload-gb" in plan_launch(linux).argv
    assert_no_removed_flags(plan_launch(linux))


def test_cpu_offload_only_when_unavoidable() -> None:
    p = seed_001_plan(allow_cpu_offload=True)
    assert not p.cpu_offload_used and "--cpu-offload-gb" not in plan_launch(p).argv


def test_fp8_kv_cache_and_explicit_batching_reach_the_argv() -> None:
    p = plan_model(spec("qwen3-8b"), get_gpu("h100-sxm"), context=32768, kv_cache_dtype="fp8", max_num_seqs=64)
    argv = plan_launch(p).argv
    assert argv[argv.index("--kv-cache-dtype") + 1] == "fp8"
    assert argv[argv.index("--max-num-seqs") + 1] == "64"


def test_vllm_cpu_launch_sets_the_kv_space_env_and_no_gpu_flags() -> None:
    """reference/vllm-cpu.md: VLLM_CPU_KVCACHE_SPACE=1 ... --dtype bfloat16 --enforce-eager."""
    p = plan_model(spec("smollm2"), None, cpu_kv_space_bytes=GIB, context=2048)
    launch = plan_launch(p, served_model_name="smollm2", model_path="/cache/models/smollm2-hf")
    assert launch.argv == [
        "/cache/models/smollm2-hf",
        "--served-model-name",
        "smollm2",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "2048",
        "--enforce-eager",
    ]
    assert launch.cpu_kv_cache_space_gib == 1 and launch_env(launch) == {"VLLM_CPU_KVCACHE_SPACE": "1"}


def test_a_plan_that_does_not_fit_has_no_launch() -> None:
    p = plan_model(spec("qwen3-32b"), get_gpu("rtx3090"), context=8192)
    with pytest.raises(PlanError, match="qwen3-32b does not fit on rtx3090: weights need"):
        plan_launch(p)


def test_parsers_can_be_left_out() -> None:
    p = plan_model(spec("deepseek-r1-distill-qwen-7b"), get_gpu("rtx3060"), quantization="awq", context=8192)
    argv = plan_launch(p).argv
    assert argv[argv.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert "--tool-call-parser" not in argv
    assert "--reasoning-parser" not in plan_launch(p, enable_reasoning=False).argv
