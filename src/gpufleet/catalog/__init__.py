"""The catalog: known models (config.json numbers, checkpoints, parsers) and GPUs, as data.

Data lives in `catalog/data/*.yaml`; this package reads and looks it up:

    >>> from gpufleet.catalog import get_model, get_gpu
    >>> get_model("Qwen/Qwen3-32B-AWQ").quantization
    'awq'
    >>> get_gpu("3090").bandwidth_gbps
    936.0
"""

from __future__ import annotations

from gpufleet.catalog.hf_dir import model_from_hf_dir
from gpufleet.catalog.loader import (
    builtin_gpus,
    builtin_models,
    gpu_from_mapping,
    model_from_mapping,
    parse_bytes,
)
from gpufleet.catalog.lookup import ModelRef, get_gpu, get_model, gpu_for_smi_name, normalize
from gpufleet.catalog.specs import GB, GIB, GpuSpec, ModelSpec, ServingFacts, Variant


def custom_gpu(
    vram_gb: float,
    bandwidth_gbps: float,
    compute_capability: str = "8.6",
    *,
    name: str = "custom",
    pcie_gen: int = 4,
) -> GpuSpec:
    """A GPU described by flags (--vram-gb, --bandwidth-gbps, --compute-capability).

    `vram_gb` is the card's nominal size in GiB as nvidia-smi shows it (a "24 GB" card is 24 GiB).
    """
    return gpu_from_mapping(
        name,
        {
            "vram": f"{vram_gb} GiB",
            "bandwidth_gbps": bandwidth_gbps,
            "compute_capability": compute_capability,
            "pcie_gen": pcie_gen,
            "display_name": f"custom {vram_gb:g} GiB, {bandwidth_gbps:g} GB/s, sm_{compute_capability}",
        },
        where="--vram-gb/--bandwidth-gbps/--compute-capability",
    )


__all__ = [
    "GB",
    "GIB",
    "GpuSpec",
    "ModelRef",
    "ModelSpec",
    "ServingFacts",
    "Variant",
    "builtin_gpus",
    "builtin_models",
    "custom_gpu",
    "get_gpu",
    "get_model",
    "gpu_for_smi_name",
    "gpu_from_mapping",
    "model_from_hf_dir",
    "model_from_mapping",
    "normalize",
    "parse_bytes",
]
