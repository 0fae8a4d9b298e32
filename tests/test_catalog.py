"""Catalog: the numbers are the models' config.json values, sizes match the seeds, lookup is forgiving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpufleet.catalog import (
    GB,
    GIB,
    ModelSpec,
    builtin_gpus,
    builtin_models,
    custom_gpu,
    get_gpu,
    get_model,
    gpu_for_smi_name,
    gpu_from_mapping,
    model_from_hf_dir,
)
from gpufleet.catalog.sizing import count_params, estimate_weight_bytes
from gpufleet.errors import CatalogError

REQUIRED_MODELS = [
    "qwen3-8b-awq",
    "qwen3-14b-awq",
    "qwen3-32b",
    "qwen3-32b-awq",
    "qwen3-30b-a3b",
    "Qwen/Qwen3-235B-A22B",
    "QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
    "qwen3-coder-30b-a3b-instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct-AWQ",
    "Qwen/Qwen2.5-14B-Instruct-AWQ",
    "Qwen/Qwen2.5-32B-Instruct-AWQ",
    "Qwen/Qwen2.5-Coder-32B-Instruct",
    "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "casperhansen/deepseek-r1-distill-qwen-7b-awq",
    "qwen2.5-coder-1.5b-instruct",
    "smollm2-135m-instruct",
]
REQUIRED_GPUS = [
    "rtx3060",
    "rtx3090",
    "rtx4090",
    "a10",
    "a100-40gb",
    "a100-80gb",
    "l40s",
    "rtx6000-ada",
    "h100-sxm",
    "h100-pcie",
    "h200",
    "gb10",
    # issue 15: the rest of the current line-up
    "l4",
    "l20",
    "rtx-a5000",
    "rtx-a6000",
    "rtx4060",
    "rtx5090",
    "b200",
]


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_every_model_the_seeds_name_resolves(name: str) -> None:
    assert get_model(name).spec.layers > 0


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_every_gpu_the_issue_names_is_known_with_cuda_total_below_nominal(name: str) -> None:
    gpu = get_gpu(name)
    assert 0 < gpu.usable_bytes <= gpu.vram_bytes
    assert gpu.bandwidth_gbps > 0 and gpu.cc >= (8, 0)


def test_every_entry_says_where_its_numbers_came_from() -> None:
    assert all(m.source for m in builtin_models().values())
    assert all(g.source for g in builtin_gpus().values())
    estimated = [v for m in builtin_models().values() for v in m.variants.values()]
    assert all(v.weight_bytes_source.startswith(("measured", "seed", "estimate")) for v in estimated)


def _count_params_of(spec: ModelSpec, **moe_and_flags: Any) -> tuple[int, int, int]:
    """count_params with the attention and MLP sizes the catalog entry states; the rest is the caller's."""
    return count_params(
        layers=spec.layers,
        hidden_size=spec.hidden_size,
        attention_heads=spec.attention_heads,
        kv_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size,
        vocab_size=spec.vocab_size,
        **moe_and_flags,
    )


@pytest.mark.parametrize("spec", list(builtin_models().values()), ids=lambda s: s.name)
def test_parameter_count_from_config_numbers_matches_the_model_card(spec: ModelSpec) -> None:
    """The architecture numbers are right if they rebuild the published parameter count (within 1.5%).

    count_params sums embeddings (+ untied lm_head) and per layer q/k/v/o, norms and the MLP
    (for MoE: all experts for the total, top-k experts for the active count).
    """
    total, active, _ = _count_params_of(
        spec,
        tie_word_embeddings=spec.tie_word_embeddings,
        experts=spec.experts,
        moe_intermediate_size=spec.moe_intermediate_size,
        experts_per_token=spec.experts_per_token,
        qkv_bias=spec.architecture.startswith("Qwen2"),
        qk_norm=spec.architecture.startswith("Qwen3"),
    )
    assert total == pytest.approx(spec.params_total, rel=0.015)
    assert active == pytest.approx(spec.params_active, rel=0.03)


def test_qwen_configs_match_the_vllm_facts_table() -> None:
    """Rows of reference/vllm-facts.md §4 (L, hidden, q heads, kv heads, head_dim)."""
    rows = {
        "qwen3-8b": (36, 4096, 32, 8, 128),
        "qwen3-32b": (64, 5120, 64, 8, 128),
        "qwen3-30b-a3b": (48, 2048, 32, 4, 128),
        "qwen3-235b-a22b": (94, 4096, 64, 4, 128),
        "qwen2.5-coder-32b-instruct": (64, 5120, 40, 8, 128),
        "qwen2.5-7b-instruct": (28, 3584, 28, 4, 128),
    }
    for name, row in rows.items():
        s = get_model(name).spec
        assert (s.layers, s.hidden_size, s.attention_heads, s.kv_heads, s.head_dim) == row, name
    assert get_model("qwen3-30b-a3b").spec.experts == 128
    assert get_model("qwen3-235b-a22b").spec.moe_intermediate_size == 1536


def test_smollm2_matches_the_brief_and_the_vllm_cpu_run() -> None:
    s = get_model("smollm2").spec
    assert (s.architecture, s.layers, s.hidden_size, s.attention_heads, s.kv_heads, s.head_dim) == (
        "LlamaForCausalLM",
        30,
        576,
        9,
        3,
        64,
    )
    assert (s.vocab_size, s.max_position_embeddings) == (49152, 8192)


def test_checkpoint_sizes_reproduce_the_seeds() -> None:
    """Seed 000: Qwen3-32B-AWQ is ~19.3 GB; seed 004: the 235B AWQ is "116GB".

    The int4 rule (0.5195 B/param for linear layers, 2 B for embeddings) gives 19.32 GB for the
    32B and 115.5 GiB for the 235B, so the seed's 116 is GiB (du -h), not GB.
    """
    q32 = get_model("qwen3-32b-awq")
    assert q32.spec.variants["awq"].weight_bytes == pytest.approx(19.3 * GB, rel=0.005)
    total, _, emb = count_params(
        layers=64,
        hidden_size=5120,
        attention_heads=64,
        kv_heads=8,
        head_dim=128,
        intermediate_size=25600,
        vocab_size=151936,
        tie_word_embeddings=False,
        qk_norm=True,
    )
    assert estimate_weight_bytes("awq", total, emb) == pytest.approx(19.3 * GB, rel=0.005)
    big = get_model("QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ")
    assert big.quantization == "awq"
    assert big.spec.variants["awq"].weight_bytes == 116 * GIB
    total, _, emb = _count_params_of(
        big.spec,
        tie_word_embeddings=False,
        experts=128,
        experts_per_token=8,
        moe_intermediate_size=1536,
        qk_norm=True,
    )
    assert estimate_weight_bytes("awq", total, emb) == pytest.approx(116 * GIB, rel=0.01)


def test_embedded_gguf_files_have_their_measured_sizes() -> None:
    assert get_model("qwen2.5-coder-1.5b-instruct").spec.variants["gguf-q4_k_m"].weight_bytes == 1_117_320_768
    assert get_model("smollm2").spec.variants["gguf-q4_1"].weight_bytes == 98_362_432


def test_serving_facts_follow_the_model_generation() -> None:
    q3 = get_model("qwen3-32b").spec.serving
    assert (q3.reasoning_parser, q3.tool_call_parser, q3.thinking) == ("qwen3", "hermes", "default-on")
    coder = get_model("qwen3-coder-30b").spec.serving
    assert (coder.reasoning_parser, coder.tool_call_parser) == (None, "qwen3_coder")
    r1 = get_model("deepseek-r1-distill-qwen-7b").spec.serving
    assert (r1.reasoning_parser, r1.thinking) == ("deepseek_r1", "always")
    assert get_model("qwen3-235b-awq").spec.serving.thinking == "never"  # Instruct-2507 never thinks


def test_names_resolve_by_repo_id_alias_and_quantization_suffix() -> None:
    assert get_model("Qwen/Qwen3-32B-AWQ").quantization == "awq"
    assert get_model("qwen3-32b-awq").quantization == "awq"
    assert get_model("Qwen3-32B-AWQ").spec.name == "qwen3-32b"
    assert get_model("qwen3-32b").quantization is None
    assert get_model("Qwen2.5-7B-awq").spec.name == "qwen2.5-7b-instruct"
    assert get_gpu("NVIDIA GeForce RTX 3090").name == "rtx3090"
    assert get_gpu("3090").name == get_gpu("RTX_3090").name == "rtx3090"
    assert get_gpu("dgx-spark").name == "gb10"


def test_unknown_model_error_lists_close_matches() -> None:
    with pytest.raises(CatalogError, match=r"unknown model 'qwen3-33b'.*Did you mean: qwen3-32b"):
        get_model("qwen3-33b")


def test_unknown_gpu_error_lists_close_matches_and_the_custom_flags() -> None:
    with pytest.raises(CatalogError, match=r"unknown GPU 'rtx3095'.*rtx3090.*--vram-gb"):
        get_gpu("rtx3095")


def test_nvidia_smi_names_map_to_catalog_gpus() -> None:
    assert gpu_for_smi_name("NVIDIA H100 80GB HBM3") is get_gpu("h100-sxm")
    assert gpu_for_smi_name("NVIDIA GB10") is get_gpu("gb10")
    assert gpu_for_smi_name("Tesla T4") is None


def test_gpu_from_a_users_config_is_validated_with_its_key_path() -> None:
    gpu = gpu_from_mapping(
        "a6000",
        {"vram": "48 GiB", "bandwidth_gbps": 768, "compute_capability": "8.6"},
        where="gpufleet.yaml: gpus.a6000",
    )
    assert gpu.usable_bytes == int(48 * GIB * 0.985) and gpu.supports_marlin
    with pytest.raises(CatalogError, match=r"gpufleet.yaml: gpus.bad.bandwidth_gbps"):
        gpu_from_mapping(
            "bad",
            {"vram": "8 GiB", "bandwidth_gbps": -1, "compute_capability": "8.6"},
            where="gpufleet.yaml: gpus.bad",
        )
    with pytest.raises(CatalogError, match=r"compute_capability: expected a string like '8.6'"):
        gpu_from_mapping(
            "bad", {"vram": "8 GiB", "bandwidth_gbps": 100, "compute_capability": "sm86"}, where="gpus.bad"
        )


def test_custom_gpu_from_flags_uses_gib_and_capability() -> None:
    gpu = custom_gpu(16, 448, "7.5")
    assert gpu.vram_bytes == 16 * GIB and not gpu.supports_marlin and not gpu.supports_bf16


def _write_smollm2_dir(root: Path, weight_bytes: int) -> Path:
    root.mkdir()
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_hidden_layers": 30,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
    }
    (root / "config.json").write_text(json.dumps(config))
    with (root / "model.safetensors").open("wb") as f:
        f.truncate(weight_bytes)
    return root


def test_local_hf_directory_becomes_a_model_with_its_real_file_size(tmp_path: Path) -> None:
    spec = model_from_hf_dir(_write_smollm2_dir(tmp_path / "SmolLM2-135M-Instruct", 269_060_256))
    builtin = get_model("smollm2").spec
    assert spec.name == "smollm2-135m-instruct"
    assert (spec.layers, spec.kv_heads, spec.head_dim, spec.max_position_embeddings) == (
        builtin.layers,
        builtin.kv_heads,
        builtin.head_dim,
        builtin.max_position_embeddings,
    )
    assert spec.params_total == 134_515_008
    variant = spec.variants["bf16"]
    assert variant.weight_bytes == 269_060_256 and variant.repo.endswith("SmolLM2-135M-Instruct")
    assert get_model("smollm2-135m-instruct", extra={spec.name: spec}).spec is spec


def test_local_awq_directory_is_recognised_by_its_quantization_config(tmp_path: Path) -> None:
    root = _write_smollm2_dir(tmp_path / "tiny-awq", 1000)
    config = json.loads((root / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128}
    (root / "config.json").write_text(json.dumps(config))
    assert list(model_from_hf_dir(root).variants) == ["awq"]


def test_local_directory_errors_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"no config\.json"):
        model_from_hf_dir(tmp_path)
    root = _write_smollm2_dir(tmp_path / "hybrid", 10)
    config = json.loads((root / "config.json").read_text())
    config["layer_types"] = ["linear_attention", "full_attention"]
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(CatalogError, match="hybrid attention"):
        model_from_hf_dir(root)
    (root / "config.json").write_text("{not json")
    with pytest.raises(CatalogError, match="not valid JSON"):
        model_from_hf_dir(root)


@pytest.mark.parametrize(
    ("name", "kib_per_token", "checkpoints"),
    [
        ("qwen3-0.6b", 112, {"bf16", "fp8"}),
        ("qwen3-1.7b", 112, {"bf16", "fp8"}),
        ("qwen3-4b", 144, {"bf16", "awq", "fp8"}),
        ("qwen2.5-0.5b-instruct", 12, {"bf16"}),
        ("qwen2.5-1.5b-instruct", 28, {"bf16"}),
        ("qwen2-7b-instruct", 56, {"bf16", "gptq"}),
        ("qwen2.5-7b-instruct", 56, {"bf16", "awq", "gptq", "w8a8", "fp8"}),
        ("qwen3-30b-a3b", 96, {"bf16", "fp8", "gptq", "awq"}),
        ("deepseek-r1-distill-qwen-14b", 192, {"bf16"}),
        ("qwen2.5-72b-instruct", 320, {"bf16", "awq"}),
    ],
)
def test_issue_15_models_have_their_config_numbers_and_checkpoints(
    name: str, kib_per_token: int, checkpoints: set[str]
) -> None:
    """KV/token = 2 * layers * kv_heads * head_dim * 2 B from each config.json (e.g. Qwen3-4B: 36*8*128)."""
    spec = get_model(name).spec
    assert 2 * spec.layers * spec.kv_heads * spec.head_dim * 2 == kib_per_token * 1024
    assert checkpoints <= set(spec.variants)


def test_weights_match_the_logged_model_loading_lines() -> None:
    """vLLM's 'Model loading took' lines in the planner-log fixtures: within 1%."""
    logged = {  # (model, checkpoint, TP): GiB per GPU
        ("qwen2.5-7b-instruct", "bf16", 1): 14.25,
        ("qwen2.5-7b-instruct", "w8a8", 1): 8.14,
        ("qwen3-8b", "bf16", 1): 15.27,
        ("qwen3-30b-a3b", "bf16", 1): 56.88,
        ("qwen3-30b-a3b", "bf16", 4): 14.2474,
        ("qwen2.5-72b-instruct", "bf16", 2): 67.8,
        ("qwen3-14b", "bf16", 1): 27.52,
    }
    for (name, quant, tp), gib in logged.items():
        planned = get_model(name).spec.variants[quant].weight_bytes / tp / 2**30
        assert planned == pytest.approx(gib, rel=0.01), name


def test_sxm_boards_are_marked_nvlink() -> None:
    assert get_gpu("h100-sxm").nvlink and get_gpu("h200").nvlink and get_gpu("b200").nvlink
    assert not get_gpu("h100-pcie").nvlink and not get_gpu("l40s").nvlink and not get_gpu("rtx4090").nvlink
