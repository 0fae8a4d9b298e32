"""The planner's data: what a plan is asked (`PlanRequest`), what it answers (`Plan`), and a `Fix`.

Kept apart from the code that computes them (fit.py) and ranks fixes (fixes.py), so both import
these types and neither imports the other's module for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpufleet.catalog import GpuSpec, ModelSpec, Variant
from gpufleet.planner.blocks import kv_bytes_for
from gpufleet.planner.memory import DEFAULT_UTILIZATION
from gpufleet.planner.throughput import DECODE_EFFICIENCY
from gpufleet.planner.vllm_versions import DEFAULT_VLLM_VERSION


@dataclass(frozen=True)
class PlanRequest:
    """Everything a plan depends on. `gpu=None` plans vLLM's CPU backend (needs cpu_kv_space_bytes)."""

    model: ModelSpec
    gpu: GpuSpec | None
    quantization: str | None = None
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    nodes: int | None = None
    gpu_memory_utilization: float = DEFAULT_UTILIZATION
    context: int | None = None
    concurrency: int = 1
    enforce_eager: bool = False
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    quantization_kernel: str | None = None  # force e.g. "awq" instead of awq_marlin (seed 001's old setup)
    allow_yarn: bool = True
    allow_cpu_offload: bool = False
    host_wsl2: bool = False
    vllm_version: str = DEFAULT_VLLM_VERSION
    efficiency: float = DECODE_EFFICIENCY
    cpu_kv_space_bytes: int | None = None
    block_size: int | None = None
    offline: bool = False  # the LLM() class (larger batch defaults) instead of `vllm serve`
    kv_connector: str | None = None  # --kv-transfer-config's kv_connector, e.g. LMCacheConnectorV1
    pytorch_sampler: bool = False  # the PyTorch fallback sampler (no FlashInfer top-k/top-p)
    what_if: bool = False  # plan a quantization the model has no checkpoint for (re-sized weights)


@dataclass(frozen=True)
class Fix:
    """One way to make a plan fit: what to change and what the changed plan looks like."""

    description: str
    changes: dict[str, object]
    result: str


@dataclass(frozen=True)
class KvBand:
    """Where vLLM's real KV-cache figure is expected to land, and what that means at both ends.

    `*_low` are None when the plan says its figure is only an upper bound (an unmodelled KV
    connector or MoE + FP8 workspaces): nothing below it can be promised. planner/band.py sizes it.
    """

    kv_cache_tokens_low: int | None
    kv_cache_tokens_high: int
    max_context_low: int | None
    max_context_high: int
    max_concurrency_low: float | None
    max_concurrency_high: float
    below: float  # fraction under the point estimate the low end allows
    above: float  # fraction over it the high end allows
    basis: str  # where the widths come from


@dataclass(frozen=True)
class Calibration:
    """How a plan's KV figure was adjusted by launches on this host (planner/calibration.py)."""

    kind: str  # "measured": this very launch ran here; "corrected": scaled by similar launches
    planned_tokens: int  # the planner's own figure before the adjustment
    factor: float  # measured / planned applied (1.0 for "measured")
    launches: int  # how many recorded launches it rests on
    note: str


@dataclass(frozen=True)
class Plan:
    """The outcome: fit or not (with ranked fixes), the memory budget per GPU, and speed."""

    request: PlanRequest
    fits: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    variant: Variant
    quantization_kernel: str | None
    dtype: str | None
    device: str
    tensor_parallel: int
    pipeline_parallel: int
    nodes: int
    enforce_eager: bool
    context: int
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int
    profile_tokens: int
    profile_seqs: int
    profile_why: str
    total_bytes_per_gpu: int
    requested_bytes_per_gpu: int
    weights_bytes_per_gpu: int
    non_torch_bytes: int
    activation_peak_bytes: int
    sampler_bytes: int
    cudagraph_bytes: int
    cuda_context_bytes: int
    kv_cache_bytes_per_gpu: int
    kv_bytes_per_token: int
    num_blocks: int
    kv_cache_tokens: int
    max_context: int
    max_concurrency: float
    needs_yarn: bool
    yarn_factor: float | None
    yarn_original_context: int | None
    cpu_offload_bytes: int
    cpu_offload_used: bool
    decode_tok_s_estimate: float | None
    decode_tok_s_without_offload: float | None
    fixes: tuple[Fix, ...] = field(default=())
    band: KvBand | None = None  # GPU plans only; the CPU backend's KV space is exact
    calibration: Calibration | None = None  # set by planner/calibration.py from launches on this host

    @property
    def model(self) -> ModelSpec:
        """The planned model."""
        return self.request.model

    @property
    def hypothetical(self) -> bool:
        """True when the checkpoint does not exist (a --what-if quantization)."""
        return self.variant.repo.startswith("(hypothetical")

    def kv_bytes_for_context(self, context: int) -> int:
        """KV bytes per GPU that one request of `context` tokens holds."""
        return kv_bytes_for(context, self.kv_bytes_per_token, self.block_size)
