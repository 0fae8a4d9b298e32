"""Find catalog entries by the names people type: canonical names, aliases, HF repo ids.

`get_model("Qwen/Qwen3-32B-AWQ")`, `get_model("qwen3-32b-awq")` and `get_model("qwen3-32b")` all
work; unknown names raise CatalogError listing the closest known names (difflib).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gpufleet.catalog.loader import builtin_gpus, builtin_models
from gpufleet.catalog.specs import GpuSpec, ModelSpec
from gpufleet.errors import CatalogError


@dataclass(frozen=True)
class ModelRef:
    """A model plus the checkpoint a name pointed at (None: the name did not pick one)."""

    spec: ModelSpec
    quantization: str | None


def normalize(name: str) -> str:
    """Lower-case, drop a leading 'nvidia', and turn spaces/underscores into dashes."""
    text = name.strip().lower().replace("_", "-").replace(" ", "-")
    text = re.sub(r"^nvidia-", "", text)
    return re.sub(r"-+", "-", text)


def _model_index(models: Mapping[str, ModelSpec]) -> dict[str, ModelRef]:
    index: dict[str, ModelRef] = {}
    for spec in models.values():
        for key in (spec.name, *spec.aliases):
            index.setdefault(normalize(key), ModelRef(spec, None))
        for quant, variant in spec.variants.items():
            index.setdefault(normalize(variant.repo), ModelRef(spec, quant))
            index.setdefault(normalize(f"{spec.name}-{quant}"), ModelRef(spec, quant))
            # "qwen3-32b-awq" style names for aliases too ("qwen2.5-7b-awq").
            for alias in spec.aliases:
                index.setdefault(normalize(f"{alias}-{quant}"), ModelRef(spec, quant))
    # Repo ids without the org ("Qwen3-32B-AWQ") are what people paste most often.
    for key, ref in list(index.items()):
        if "/" in key:
            index.setdefault(key.split("/", 1)[1], ref)
    return index


def _close(name: str, candidates: Iterable[str]) -> str:
    names = sorted(set(candidates))
    close = difflib.get_close_matches(normalize(name), names, n=5, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def get_model(name: str, extra: Mapping[str, ModelSpec] | None = None) -> ModelRef:
    """Resolve a model name/alias/repo id; `extra` adds user models (config, local dirs)."""
    models = dict(builtin_models())
    if extra:
        models.update(extra)
    index = _model_index(models)
    ref = index.get(normalize(name))
    if ref is None:
        raise CatalogError(
            f"unknown model {name!r}.{_close(name, [n for n in index if '/' not in n])}"
            " List them with 'gpufleet catalog models', or point at a local HF directory."
        )
    return ref


def get_gpu(name: str, extra: Mapping[str, GpuSpec] | None = None) -> GpuSpec:
    """Resolve a GPU name/alias/nvidia-smi name; `extra` adds GPUs from the user's config."""
    gpus = dict(builtin_gpus())
    if extra:
        gpus.update(extra)
    index: dict[str, GpuSpec] = {}
    for spec in gpus.values():
        for key in (spec.name, *spec.aliases, *spec.smi_names):
            index.setdefault(normalize(key), spec)
    gpu = index.get(normalize(name))
    if gpu is None:
        raise CatalogError(
            f"unknown GPU {name!r}.{_close(name, index)} Known: {', '.join(sorted(gpus))}."
            " Or describe it with --vram-gb, --bandwidth-gbps and --compute-capability."
        )
    return gpu


def gpu_for_smi_name(smi_name: str) -> GpuSpec | None:
    """The catalog GPU whose nvidia-smi/NVML name this is, if any ("NVIDIA GeForce RTX 3090")."""
    wanted = normalize(smi_name)
    for spec in builtin_gpus().values():
        if any(normalize(n) == wanted for n in spec.smi_names):
            return spec
    return None
