"""Read the catalog's YAML data into ModelSpec/GpuSpec records, rejecting malformed entries."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, TypedDict

import yaml

from gpufleet.catalog.sizing import count_params, estimate_weight_bytes
from gpufleet.catalog.specs import GIB, GpuSpec, ModelSpec, ServingFacts, Variant
from gpufleet.errors import CatalogError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$", re.I)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_THINKING = ("default-on", "always", "never")


def parse_bytes(value: object, *, where: str) -> int:
    """Bytes from an int or a string like "12288 MiB", "19.3 GB", "11.76 GiB"."""
    if isinstance(value, bool):
        raise CatalogError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            unit = (match.group(2) or "B").lower()
            return int(float(match.group(1)) * _UNITS[unit])
    raise CatalogError(f"{where}: expected a size like '24 GiB' or a number of bytes, got {value!r}")


def _int(entry: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = entry.get(key, default)
    if isinstance(value, str):
        # YAML 1.1 reads "8.2e9" (no sign in the exponent) as a string.
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CatalogError(f"{where}.{key}: expected a non-negative number, got {value!r}")
    return int(value)


class _Shape(TypedDict):
    """The architecture fields both `count_params` and `ModelSpec` take (checked by mypy on both calls)."""

    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    experts: int
    moe_intermediate_size: int
    experts_per_token: int


def model_from_mapping(name: str, entry: Mapping[str, Any], *, where: str) -> ModelSpec:
    """Build a ModelSpec from one catalog (or config) entry; errors name the key path."""
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping of model fields")
    arch = str(entry.get("architecture", ""))
    shape = _shape(entry, where)
    counted_total, counted_active, embedding = count_params(
        **shape, qkv_bias=arch.startswith("Qwen2"), qk_norm=arch.startswith("Qwen3")
    )
    params_total = _int(entry, "params_total", where, counted_total)
    params_active = _int(entry, "params_active", where, params_total if not shape["experts"] else counted_active)
    variants = _variants(entry.get("variants"), where, counted_total, embedding)
    serving = _serving(entry.get("serving") or {}, where)
    yarn = entry.get("yarn_original_context")
    return ModelSpec(
        name=name,
        architecture=arch,
        **shape,
        max_position_embeddings=_int(entry, "max_position_embeddings", where),
        params_total=params_total,
        params_active=params_active,
        rope_theta=float(entry.get("rope_theta", 10000.0)),
        variants=variants,
        serving=serving,
        yarn_original_context=int(yarn) if yarn else None,
        rope_scaling=entry.get("rope_scaling"),
        aliases=tuple(str(a) for a in entry.get("aliases", ())),
        source=str(entry.get("source", "")),
    )


def _shape(entry: Mapping[str, Any], where: str) -> _Shape:
    """The architecture fields, read once: the parameter count needs them and the ModelSpec keeps them."""
    layers = _int(entry, "layers", where)
    hidden = _int(entry, "hidden_size", where)
    heads = _int(entry, "attention_heads", where)
    kv_heads = _int(entry, "kv_heads", where, heads)
    head_dim = _int(entry, "head_dim", where, hidden // heads if heads else 0)
    if min(layers, hidden, heads, kv_heads, head_dim) <= 0:
        raise CatalogError(f"{where}: layers, hidden_size, attention_heads, kv_heads, head_dim must be > 0")
    experts = _int(entry, "experts", where, 0)
    return {
        "layers": layers,
        "hidden_size": hidden,
        "attention_heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": _int(entry, "intermediate_size", where, 0),
        "vocab_size": _int(entry, "vocab_size", where),
        "tie_word_embeddings": bool(entry.get("tie_word_embeddings", False)),
        "experts": experts,
        "moe_intermediate_size": _int(entry, "moe_intermediate_size", where, 0),
        "experts_per_token": _int(entry, "experts_per_token", where, 0),
    }


def _variants(raw_variants: object, where: str, counted_total: int, embedding: int) -> dict[str, Variant]:
    """The checkpoints by quantization; one without `weight_bytes` is sized from the parameter count."""
    if not isinstance(raw_variants, Mapping) or not raw_variants:
        raise CatalogError(f"{where}.variants: expected at least one checkpoint (e.g. bf16: {{repo: ...}})")
    variants: dict[str, Variant] = {}
    for quant, raw in raw_variants.items():
        vwhere = f"{where}.variants.{quant}"
        if not isinstance(raw, Mapping) or not raw.get("repo"):
            raise CatalogError(f"{vwhere}: expected a mapping with 'repo'")
        fmt = str(raw.get("format", "safetensors"))
        if "weight_bytes" in raw:
            weight_bytes = parse_bytes(raw["weight_bytes"], where=f"{vwhere}.weight_bytes")
            size_source = str(raw.get("weight_bytes_source", "catalog"))
        else:
            try:
                weight_bytes = estimate_weight_bytes(str(quant), counted_total, embedding)
            except ValueError as err:
                raise CatalogError(f"{vwhere}: no weight_bytes and {err}") from err
            size_source = f"estimate: {quant} size from {counted_total / 1e9:.2f}B params (catalog/sizing.py)"
        variants[str(quant)] = Variant(
            quantization=str(quant),
            repo=str(raw["repo"]),
            weight_bytes=weight_bytes,
            weight_bytes_source=size_source,
            format=fmt,
        )
    return variants


def _serving(serving_raw: Any, where: str) -> ServingFacts:
    """The `serving:` facts (parsers, thinking mode) vLLM launches and the dialects need."""
    thinking = str(serving_raw.get("thinking", "never"))
    if thinking not in _THINKING:
        raise CatalogError(f"{where}.serving.thinking: expected one of {', '.join(_THINKING)}, got {thinking!r}")
    return ServingFacts(
        reasoning_parser=serving_raw.get("reasoning_parser"),
        tool_call_parser=serving_raw.get("tool_call_parser"),
        thinking=thinking,
    )


def gpu_from_mapping(name: str, entry: Mapping[str, Any], *, where: str) -> GpuSpec:
    """Build a GpuSpec from one catalog entry or a user's config (`vram`, `bandwidth_gbps`, ...)."""
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: expected a mapping of GPU fields")
    if "vram" not in entry:
        raise CatalogError(f"{where}.vram: missing (e.g. vram: 24 GiB)")
    vram = parse_bytes(entry["vram"], where=f"{where}.vram")
    # Without a measured total, assume the ~1.5% CUDA keeps back (3090: 24,576 -> 24,258 MiB).
    usable = parse_bytes(entry["usable"], where=f"{where}.usable") if "usable" in entry else int(vram * 0.985)
    bandwidth = entry.get("bandwidth_gbps")
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int | float) or bandwidth <= 0:
        raise CatalogError(f"{where}.bandwidth_gbps: expected a positive number (GB/s), got {bandwidth!r}")
    cc = str(entry.get("compute_capability", ""))
    if not re.fullmatch(r"\d+\.\d+", cc):
        raise CatalogError(f"{where}.compute_capability: expected a string like '8.6', got {cc!r}")
    if vram <= 0 or usable <= 0 or usable > vram:
        raise CatalogError(f"{where}: need 0 < usable <= vram (got usable={usable}, vram={vram})")
    pcie = entry.get("pcie_gen", 4)
    return GpuSpec(
        name=name,
        display_name=str(entry.get("display_name", name)),
        vram_bytes=vram,
        usable_bytes=usable,
        bandwidth_gbps=float(bandwidth),
        compute_capability=cc,
        pcie_gen=int(pcie) if pcie is not None else None,
        needs_eager=bool(entry.get("needs_eager", False)),
        eager_reason=str(entry.get("eager_reason", "")),
        unified_memory=bool(entry.get("unified_memory", False)),
        host_reserved_bytes=parse_bytes(entry.get("host_reserved", 0), where=f"{where}.host_reserved"),
        gpus_per_node=_int(entry, "gpus_per_node", where, 8),
        nvlink=bool(entry.get("nvlink", False)),
        aliases=tuple(str(a) for a in entry.get("aliases", ())),
        smi_names=tuple(str(a) for a in entry.get("smi_names", ())),
        source=str(entry.get("source", "")),
    )


def _read_data(filename: str) -> Mapping[str, Any]:
    text = resources.files("gpufleet.catalog").joinpath("data", filename).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, Mapping):
        raise CatalogError(f"catalog/data/{filename}: expected a mapping at the top level")
    return data


@cache
def builtin_models() -> dict[str, ModelSpec]:
    """Every model in catalog/data/models.yaml, by canonical name (read once)."""
    entries = _read_data("models.yaml").get("models", {})
    return {str(n): model_from_mapping(str(n), e, where=f"models.yaml: models.{n}") for n, e in entries.items()}


@cache
def builtin_gpus() -> dict[str, GpuSpec]:
    """Every GPU in catalog/data/gpus.yaml, by canonical name (read once)."""
    entries = _read_data("gpus.yaml").get("gpus", {})
    return {str(n): gpu_from_mapping(str(n), e, where=f"gpus.yaml: gpus.{n}") for n, e in entries.items()}


__all__ = ["GIB", "builtin_gpus", "builtin_models", "gpu_from_mapping", "model_from_mapping", "parse_bytes"]
