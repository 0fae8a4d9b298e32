"""`gpufleet plan --from-hub`: an uncatalogued model from config.json + safetensors headers.

Against tests/standin_hf_hub.py (a stand-in Hub on 127.0.0.1 reached through HF_ENDPOINT): the
real huggingface_hub client makes its usual calls, no weights are downloaded, no network is used.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest
from typer.testing import CliRunner

from gpufleet.catalog.hf_hub import model_from_hub
from gpufleet.cli import app
from gpufleet.errors import CatalogError
from tests.standin_hf_hub import safetensors_header, standin_hub

# Qwen/Qwen2.5-0.5B config.json (the values catalog/data/models.yaml cites for qwen2.5-0.5b-instruct).
CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 151936,
}


def qwen2_tensors(layers: range) -> dict[str, tuple[str, list[int]]]:
    h, kv, inter = 896, 2 * 64, 4864
    out: dict[str, tuple[str, list[int]]] = {}
    for i in layers:
        p = f"model.layers.{i}."
        out |= {
            p + "self_attn.q_proj.weight": ("BF16", [h, h]),
            p + "self_attn.q_proj.bias": ("BF16", [h]),
            p + "self_attn.k_proj.weight": ("BF16", [kv, h]),
            p + "self_attn.k_proj.bias": ("BF16", [kv]),
            p + "self_attn.v_proj.weight": ("BF16", [kv, h]),
            p + "self_attn.v_proj.bias": ("BF16", [kv]),
            p + "self_attn.o_proj.weight": ("BF16", [h, h]),
            p + "mlp.gate_proj.weight": ("BF16", [inter, h]),
            p + "mlp.up_proj.weight": ("BF16", [inter, h]),
            p + "mlp.down_proj.weight": ("BF16", [h, inter]),
            p + "input_layernorm.weight": ("BF16", [h]),
            p + "post_attention_layernorm.weight": ("BF16", [h]),
        }
    return out


SHARD1 = {"model.embed_tokens.weight": ("BF16", [151936, 896]), **qwen2_tensors(range(12))}
SHARD2 = {**qwen2_tensors(range(12, 24)), "model.norm.weight": ("BF16", [896])}


def _elements(tensors: dict[str, tuple[str, list[int]]]) -> int:
    total = 0
    for _, shape in tensors.values():
        n = 1
        for dim in shape:
            n *= dim
        total += n
    return total


PARAMS = _elements(SHARD1) + _elements(SHARD2)
REPO = "someone/Qwen2.5-0.5B-finetune"
FILES = {
    f"{REPO}/config.json": json.dumps(CONFIG).encode(),
    f"{REPO}/model.safetensors.index.json": json.dumps(
        {
            "metadata": {"total_size": PARAMS * 2},
            "weight_map": {
                **{k: "model-00001-of-00002.safetensors" for k in SHARD1},
                **{k: "model-00002-of-00002.safetensors" for k in SHARD2},
            },
        }
    ).encode(),
    f"{REPO}/model-00001-of-00002.safetensors": safetensors_header(SHARD1),
    f"{REPO}/model-00002-of-00002.safetensors": safetensors_header(SHARD2),
    "someone/gguf-only/config.json": json.dumps(CONFIG).encode(),
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with standin_hub(FILES) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield url


def test_a_hub_model_is_sized_from_its_safetensors_headers(hub: str) -> None:
    spec = model_from_hub(REPO)
    assert PARAMS == 494_032_768  # Qwen2.5-0.5B's parameter count (model card: 0.49B)
    variant = spec.variants["bf16"]
    assert variant.weight_bytes == PARAMS * 2 and variant.weight_bytes_source.startswith("measured: safetensors")
    assert (spec.layers, spec.kv_heads, spec.head_dim, spec.tie_word_embeddings) == (24, 2, 64, True)


def test_plan_from_hub_through_the_cli(hub: str) -> None:
    result = CliRunner().invoke(app, ["plan", REPO, "--from-hub", "--gpu", "rtx4090", "--context", "32768", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["weights_bytes_per_gpu"] == PARAMS * 2
    assert data["kv_bytes_per_token"] == 2 * 24 * 2 * 64 * 2
    assert data["argv"][0] == REPO


def test_missing_repo_and_missing_weights_are_clear_errors(hub: str) -> None:
    with pytest.raises(CatalogError, match=r"no such model or no config\.json"):
        model_from_hub("someone/does-not-exist")
    with pytest.raises(CatalogError, match="no safetensors weights"):
        model_from_hub("someone/gguf-only")
    result = CliRunner().invoke(app, ["plan", "someone/does-not-exist", "--from-hub", "--gpu", "rtx4090"])
    assert result.exit_code == 2 and "no such model" in result.output
