"""The planner: pure functions from (model, GPU, settings) to a Plan and a vLLM launch.

    >>> from gpufleet.catalog import get_gpu, get_model
    >>> from gpufleet.planner import plan_launch, plan_model
    >>> p = plan_model(get_model("qwen3-8b-awq").spec, get_gpu("rtx3060"), quantization="awq",
    ...                gpu_memory_utilization=0.90, context=8192)
    >>> plan_launch(p).argv[:3]
    ['Qwen/Qwen3-8B-AWQ', '--served-model-name', 'qwen3-8b-awq']

Modules, one job each: memory (vLLM's budget terms), blocks (KV blocks -> tokens, CPU predictor),
rope (YaRN), kernels (quantization kernel), throughput (roofline), types (PlanRequest, Plan, Fix),
budget (the per-GPU budget and what fits in it), fit (compute_plan, plan), band (the KV band),
fixes (ranked fixes),
launch (argv/env), context_table, report (JSON), vllm_versions (version quirks).
"""

from __future__ import annotations

from gpufleet.planner.blocks import predict_cpu_kv_tokens
from gpufleet.planner.context_table import ContextRow, context_table
from gpufleet.planner.fit import plan, plan_model
from gpufleet.planner.launch import LaunchPlan, plan_launch
from gpufleet.planner.memory import DEFAULT_UTILIZATION
from gpufleet.planner.report import plan_json
from gpufleet.planner.throughput import DECODE_EFFICIENCY
from gpufleet.planner.types import Fix, KvBand, Plan, PlanRequest
from gpufleet.planner.vllm_versions import DEFAULT_VLLM_VERSION

__all__ = [
    "DECODE_EFFICIENCY",
    "DEFAULT_UTILIZATION",
    "DEFAULT_VLLM_VERSION",
    "ContextRow",
    "Fix",
    "KvBand",
    "LaunchPlan",
    "Plan",
    "PlanRequest",
    "context_table",
    "plan",
    "plan_json",
    "plan_launch",
    "plan_model",
    "predict_cpu_kv_tokens",
]
