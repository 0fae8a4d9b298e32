"""Which vLLM quantization kernel a checkpoint gets on a GPU (vllm-facts.md §2; seed 001)."""

from __future__ import annotations

from dataclasses import dataclass

from gpufleet.catalog import GpuSpec, Variant

# Minimum compute capability per method (quantization/*.py get_min_capability): awq/gptq 7.5,
# fp8 7.5 (weight-only Marlin below sm89).
_MIN_CC = {"awq": (7, 5), "gptq": (7, 5), "fp8": (7, 5), "compressed-tensors": (7, 5)}
# Seed 001: "awq_marlin Marlin GEMM kernels vs generic AWQ (~2-3x)"; the planner uses 2.5.
SLOW_KERNEL_FACTOR = {"awq": 2.5, "gptq": 2.5}


@dataclass(frozen=True)
class KernelChoice:
    """The --quantization value to pass (None for unquantized) and why it can't run, if so."""

    kernel: str | None
    problem: str | None = None
    dtype: str | None = None  # --dtype override (float16 on GPUs without bf16)


def choose_kernel(variant: Variant, gpu: GpuSpec | None) -> KernelChoice:
    """awq -> awq_marlin on sm80+ (seed 001: ~19 vs 1.6 tok/s with the rest), else awq; etc."""
    method = variant.quant_method
    if gpu is None:  # vLLM's CPU backend
        if method is not None:
            return KernelChoice(
                None,
                f"{variant.quantization} checkpoints need GPU kernels; vLLM's CPU backend runs the bf16 checkpoint",
            )
        return KernelChoice(None)
    dtype = None if gpu.supports_bf16 or method is not None else "float16"
    if method is None:
        return KernelChoice(None, dtype=dtype)
    need = _MIN_CC.get(method)
    if need is not None and gpu.cc < need:
        return KernelChoice(
            None,
            f"{method} needs compute capability >= {need[0]}.{need[1]}; {gpu.name} has {gpu.compute_capability}",
        )
    if method in ("awq", "gptq"):
        return KernelChoice(f"{method}_marlin" if gpu.supports_marlin else method)
    return KernelChoice(method)
