"""Add a model to the catalog from a local Hugging Face directory (config.json + safetensors)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gpufleet.catalog.loader import model_from_mapping
from gpufleet.catalog.specs import ModelSpec
from gpufleet.errors import CatalogError

# config.json quant_method -> the catalog's variant name
_QUANT_NAMES = {"awq": "awq", "gptq": "gptq", "fp8": "fp8", "compressed-tensors": "compressed-tensors"}


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    # Multimodal and newer configs nest the language model under text_config.
    nested = config.get("text_config")
    return nested if isinstance(nested, Mapping) and "hidden_size" in nested else config


def _weight_bytes(path: Path) -> int:
    index = path / "model.safetensors.index.json"
    shards = sorted(path.glob("*.safetensors"))
    if shards:
        return sum(p.stat().st_size for p in shards)
    if index.is_file():
        total = json.loads(index.read_text(encoding="utf-8")).get("metadata", {}).get("total_size")
        if isinstance(total, int):
            return total
    raise CatalogError(f"{path}: no *.safetensors files (vLLM needs safetensors weights)")


def model_from_hf_dir(path: str | Path, name: str | None = None) -> ModelSpec:
    """Read `path/config.json` and the safetensors sizes into a ModelSpec with one variant.

    >>> spec = model_from_hf_dir("~/models/SmolLM2-135M-Instruct")   # doctest: +SKIP
    """
    root = Path(path).expanduser()
    config_path = root / "config.json"
    if not config_path.is_file():
        raise CatalogError(f"{root}: no config.json (expected a Hugging Face model directory)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CatalogError(f"{config_path}: not valid JSON ({err})") from err
    return model_from_config(
        config,
        repo=str(root),
        weight_bytes=lambda: _weight_bytes(root),
        size_source=f"measured: safetensors files in {root}",
        where=str(config_path),
        name=name or root.name.lower(),
    )


def model_from_config(
    config: Mapping[str, Any],
    *,
    repo: str,
    weight_bytes: Callable[[], int],
    size_source: str,
    where: str,
    name: str,
) -> ModelSpec:
    """A ModelSpec from a config.json mapping; `weight_bytes` is asked only once the config is valid."""
    if not isinstance(config, Mapping):
        raise CatalogError(f"{where}: expected a JSON object")
    text = _text_config(config)
    if "kv_lora_rank" in text:
        raise CatalogError(f"{where}: MLA attention (kv_lora_rank) is not modelled by the planner yet")
    layer_types = text.get("layer_types") or []
    if any(t not in ("full_attention", "attention") for t in layer_types):
        raise CatalogError(
            f"{where}: hybrid attention layers ({sorted(set(layer_types))}) are not modelled by the planner;"
            " read the KV size from vLLM's log ('GPU KV cache size')"
        )
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size"):
        if key not in text:
            raise CatalogError(f"{where}: missing {key!r}")
    quant_cfg = config.get("quantization_config") or {}
    method = str(quant_cfg.get("quant_method", "")).lower()
    dtype = str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "bfloat16")
    quant = _QUANT_NAMES.get(method) or ("fp16" if dtype == "float16" else "bf16")
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    rope_theta = text.get("rope_theta") or (rope.get("rope_theta") if isinstance(rope, Mapping) else None)
    heads = int(text["num_attention_heads"])
    archs = config.get("architectures") or ["unknown"]
    entry = {
        "architecture": archs[0],
        "layers": text["num_hidden_layers"],
        "hidden_size": text["hidden_size"],
        "attention_heads": heads,
        "kv_heads": text.get("num_key_value_heads") or heads,
        "head_dim": text.get("head_dim") or int(text["hidden_size"]) // heads,
        "intermediate_size": text.get("intermediate_size", 0),
        "vocab_size": text["vocab_size"],
        "max_position_embeddings": text.get("max_position_embeddings", 2048),
        "rope_theta": rope_theta or 10000.0,
        "rope_scaling": text.get("rope_scaling"),
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        "experts": text.get("num_experts") or text.get("num_local_experts") or 0,
        "experts_per_token": text.get("num_experts_per_tok", 0),
        "moe_intermediate_size": text.get("moe_intermediate_size", 0),
        # Qwen's long-context recipe scales from 32768; other families do not document one.
        "yarn_original_context": 32768 if str(text.get("model_type", "")).startswith("qwen") else None,
        "variants": {
            quant: {
                "repo": repo,
                "weight_bytes": weight_bytes(),
                "weight_bytes_source": size_source,
            }
        },
        "source": f"read from {where}",
    }
    return model_from_mapping(name, entry, where=where)
