"""`gpufleet plan` names every memory term and lets the user set what moves them (issue 15)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gpufleet.catalog import GIB
from gpufleet.cli import app
from gpufleet.planner.band import KV_BAND_ABOVE, KV_BAND_BELOW

runner = CliRunner()


def plan_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code in (0, 1), result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_json_has_the_profile_batch_sampler_and_graph_terms() -> None:
    data = plan_json("qwen3-8b", "--gpu", "rtx-a5000", "--context", "16384", "--vllm-version", "0.21.0")
    assert data["profile_batch"] == {"tokens": 2048, "seqs": 256, "why": "max_num_batched_tokens (V1)"}
    # 0.15+: the PyTorch sampler (FlashInfer's is off by default) holds ~2.4 copies of the fp32 logits.
    assert data["sampler_bytes"] == int(256 * 151936 * 4 * 2.4)
    assert (
        data["cudagraphs_budgeted"] is True and isinstance(data["cudagraph_bytes"], int) and data["cudagraph_bytes"] > 0
    )
    total = sum(
        int(data[k])  # type: ignore[call-overload]
        for k in (
            "weights_bytes_per_gpu",
            "non_torch_bytes",
            "activation_peak_bytes",
            "sampler_bytes",
            "cudagraph_bytes",
        )
    )
    assert data["kv_cache_bytes_per_gpu"] == int(data["requested_bytes_per_gpu"]) - total  # type: ignore[call-overload]


def test_max_num_batched_tokens_and_seqs_move_the_kv_cache() -> None:
    base = plan_json("qwen3-8b", "--gpu", "h100-sxm", "--context", "32768")
    big = plan_json("qwen3-8b", "--gpu", "h100-sxm", "--context", "32768", "--max-num-batched-tokens", "32768")
    few = plan_json("qwen3-8b", "--gpu", "h100-sxm", "--context", "32768", "--max-num-seqs", "16")
    assert base["profile_batch"]["tokens"] == 8192  # type: ignore[index]
    assert big["profile_batch"]["tokens"] == 32768  # type: ignore[index]
    # 4x the batch: the forward peak grows 4x and the KV cache shrinks by the difference.
    assert big["activation_peak_bytes"] == 4 * base["activation_peak_bytes"]  # type: ignore[operator]
    assert big["kv_cache_tokens"] < base["kv_cache_tokens"] < few["kv_cache_tokens"]  # type: ignore[operator]
    assert few["sampler_bytes"] == int(16 * 151936 * 4 * 2.4)


def test_vllm_version_selects_the_accounting() -> None:
    """0.8 (V1): 1024 sampler rows, no graph budget; 0.7 (V0): profile max(len, 2048); 0.21+: graphs."""
    v07 = plan_json("qwen2.5-7b-instruct", "--gpu", "rtx4090", "--context", "16384", "--vllm-version", "0.7.3")
    v085 = plan_json("qwen2.5-7b-instruct", "--gpu", "rtx4090", "--context", "16384", "--vllm-version", "0.8.5")
    v033 = plan_json("qwen2.5-7b-instruct", "--gpu", "rtx4090", "--context", "16384", "--vllm-version", "0.33.0")
    assert v07["profile_batch"]["tokens"] == 16384 and v07["sampler_bytes"] == 0  # type: ignore[index]
    assert v085["profile_batch"] == {"tokens": 2048, "seqs": 1024, "why": "max_num_batched_tokens (V1)"}
    assert v07["cudagraph_bytes"] == v085["cudagraph_bytes"] == 0 and not v085["cudagraphs_budgeted"]
    assert v033["cudagraphs_budgeted"] and int(v033["cudagraph_bytes"]) > 0.25 * GIB  # type: ignore[call-overload]


def test_human_output_names_each_term() -> None:
    result = runner.invoke(
        app, ["plan", "qwen3-8b", "--gpu", "rtx4090", "--context", "8192", "--vllm-version", "0.8.5"]
    )
    for term in ("profile batch", "activation peak", "sampler", "CUDA graphs", "non-torch", "does not budget them"):
        assert term in result.output


def test_kv_connector_and_moe_fp8_warn() -> None:
    data = plan_json("qwen3-30b-a3b", "-q", "fp8", "--gpu", "h100-sxm", "--kv-connector", "LMCacheConnectorV1")
    text = " ".join(data["warnings"])  # type: ignore[arg-type]
    assert "MoE + FP8" in text and "LMCacheConnectorV1" in text


def test_nvlink_cards_hold_more_non_torch_memory_at_tp_above_1() -> None:
    h100 = plan_json("qwen3-32b", "--gpu", "h100-sxm", "--tp", "2", "--context", "32768")
    l40s = plan_json("qwen3-32b", "--gpu", "l40s", "--tp", "2", "--context", "32768")
    single = plan_json("qwen3-32b", "--gpu", "h100-sxm", "--context", "32768")
    # 0.19 on H100 logged 2.06-2.13 GiB at TP=2/4 and 0.24-0.27 at TP=1 (llm-d-planner sweep).
    assert h100["non_torch_bytes"] == pytest.approx(2.1 * GIB, abs=2)
    assert l40s["non_torch_bytes"] == pytest.approx(0.6 * GIB, abs=2)
    assert single["non_torch_bytes"] == pytest.approx(0.25 * GIB, abs=2)


def test_bad_batch_numbers_are_refused_with_exit_2() -> None:
    result = runner.invoke(app, ["plan", "qwen3-8b", "--gpu", "rtx4090", "--max-num-seqs", "0"])
    assert result.exit_code == 2 and "max_num_seqs" in result.output


def test_what_if_quantization_resizes_the_weights_and_says_it_is_hypothetical() -> None:
    """Qwen2.5-72B has no FP8 checkpoint: --what-if plans one (72.7B params: 1 B each, embeddings bf16)."""
    refused = runner.invoke(app, ["plan", "qwen2.5-72b-instruct", "-q", "fp8", "--gpu", "h100-sxm", "--tp", "2"])
    assert refused.exit_code == 2 and "--what-if" in refused.output
    bf16 = plan_json("qwen2.5-72b-instruct", "--gpu", "h100-sxm", "--tp", "2", "--context", "32768")
    fp8 = plan_json(
        "qwen2.5-72b-instruct", "-q", "fp8", "--what-if", "--gpu", "h100-sxm", "--tp", "2", "--context", "32768"
    )
    assert fp8["hypothetical"] is True and bf16["hypothetical"] is False
    embeddings = 2 * 152064 * 8192
    assert fp8["weights_bytes_per_gpu"] == -(-((72_700_000_000 - embeddings) + 2 * embeddings) // 2)
    assert int(fp8["kv_cache_tokens"]) > int(bf16["kv_cache_tokens"])  # type: ignore[call-overload]
    assert fp8["argv"] == [] and fp8["warnings"][0].startswith("HYPOTHETICAL")  # type: ignore[index]


def test_what_if_refuses_a_method_without_a_size_rule() -> None:
    result = runner.invoke(app, ["plan", "qwen3-8b", "-q", "nvfp4", "--what-if", "--gpu", "h100-sxm"])
    assert result.exit_code == 2 and "no size rule" in result.output


def test_json_gives_the_kv_band_with_context_and_concurrency_at_both_ends() -> None:
    data = plan_json("qwen2.5-7b-instruct", "--gpu", "rtx4090", "--util", "0.9", "--context", "32768")
    low, point, high = data["kv_cache_tokens_low"], data["kv_cache_tokens"], data["kv_cache_tokens_high"]
    assert isinstance(low, int) and isinstance(point, int) and isinstance(high, int)
    assert low < point < high and low % 16 == 0 and high % 16 == 0
    assert low == pytest.approx(point * (1 - KV_BAND_BELOW), abs=16)
    assert high == pytest.approx(point * (1 + KV_BAND_ABOVE), abs=16)
    assert data["max_context_low"] == data["max_context_high"] == 32768  # the window caps both ends
    conc_low, conc_high = data["max_concurrency_low"], data["max_concurrency_high"]
    assert isinstance(conc_low, float) and isinstance(conc_high, float)
    assert conc_low < float(data["max_concurrency"]) < conc_high  # type: ignore[arg-type]
    band = data["band"]
    assert isinstance(band, dict) and "test-set" in band["basis"]


def test_an_upper_bound_plan_has_no_low_end_and_the_cpu_backend_no_band() -> None:
    data = plan_json("qwen3-8b", "--gpu", "rtx-a5000", "--context", "16384", "--kv-connector", "LMCacheConnectorV1")
    assert data["kv_cache_tokens_low"] is None and data["max_concurrency_low"] is None
    assert isinstance(data["kv_cache_tokens_high"], int)
    cpu = plan_json("smollm2", "--cpu", "--kv-space-gib", "1", "--context", "2048")
    assert cpu["kv_cache_tokens_low"] is None and cpu["kv_cache_tokens_high"] is None and cpu["band"] is None


def test_the_table_prints_the_band() -> None:
    result = runner.invoke(app, ["plan", "qwen3-8b", "--gpu", "h100", "--context", "8192"])
    assert result.exit_code == 0, result.output
    assert "KV tokens band" in result.output and "requests band" in result.output


@pytest.fixture(autouse=True)
def _no_host_calibration(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read the planner's own figures, not launches this machine may have recorded."""
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path_factory.mktemp("cache")))
