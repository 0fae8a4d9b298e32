"""The planner against real vLLM start-up logs people posted (tests/data/planner_logs/fixtures.yaml).

One test per fixture: planned KV-cache tokens within +-5% of what vLLM reported. Fixtures marked
`expect_miss` are the known misses (docs/planner.md lists each with its error and reason); they are
checked to really miss and to be explained, so the list cannot go stale silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.planner_logs import (
    TOLERANCE,
    LogFixture,
    error,
    half_width,
    in_band,
    is_v0,
    load_fixtures,
    loso_band_coverage,
    plan_for,
)

FIXTURES = load_fixtures()
HITS = [fx for fx in FIXTURES if not fx.expect_miss]
MISSES = [fx for fx in FIXTURES if fx.expect_miss]


@pytest.mark.parametrize("fx", HITS, ids=[fx.id for fx in HITS])
def test_planned_kv_tokens_within_5_percent_of_the_log(fx: LogFixture) -> None:
    assert abs(error(fx)) <= TOLERANCE, f"{fx.id}: planned {plan_for(fx).kv_cache_tokens:,} vs {fx.reported_tokens:,}"


@pytest.mark.parametrize("fx", MISSES, ids=[fx.id for fx in MISSES])
def test_expected_misses_really_miss_and_say_why(fx: LogFixture) -> None:
    assert abs(error(fx)) > TOLERANCE, f"{fx.id} now passes: drop expect_miss"
    assert fx.raw.get("reason"), f"{fx.id}: an expected miss needs a reason"


def test_moe_fp8_with_a_kv_connector_warns_instead_of_a_confident_number() -> None:
    fx = next(f for f in FIXTURES if f.id == "vllm-21348-qwen3-235b-fp8-4xh100-lmcache")
    warnings = " ".join(plan_for(fx).warnings)
    assert "MoE + FP8" in warnings and "LMCacheConnectorV1" in warnings


def test_fixtures_cover_v0_and_v1_engines_tp_and_quantizations() -> None:
    raw = [fx.raw for fx in FIXTURES]
    assert {r["quantization"] for r in raw} >= {"bf16", "awq", "fp8", "w8a8"}
    assert {r.get("tensor_parallel", 1) for r in raw} >= {1, 2, 4}
    assert {r["vllm_version"].split(".")[1] for r in raw} >= {"7", "8", "16", "17", "19", "21"}
    assert all(fx.source.startswith("https://github.com/") and fx.raw["excerpt"].strip() for fx in FIXTURES)
    assert len({fx.id for fx in FIXTURES}) == len(FIXTURES)


def test_at_least_90_percent_of_the_fitting_logs_are_within_5_percent() -> None:
    """Issue 15's bar, now over the fitting set (the constants' own logs); the test set has its figures below."""
    fit = [fx for fx in FIXTURES if fx.split == "fit"]
    passing = [fx for fx in fit if abs(error(fx)) <= TOLERANCE]
    assert len(FIXTURES) >= 20
    assert len(passing) / len(fit) >= 0.90, f"{len(passing)}/{len(fit)} within 5%"


# --- Fitting set vs test set (issue 24) -------------------------------------------------------
# The constants in planner/memory.py were read off the `split: fit` sources only. The test set's
# planned figures are pinned here, so changing a constant shows at once what it does to logs it
# was not tuned on; docs/planner.md reports the same table.

TEST_SET = [fx for fx in FIXTURES if fx.split == "test"]
FIT_SET = [fx for fx in FIXTURES if fx.split == "fit"]
TEST_SET_PLANNED = {
    "vllm-15815-qwen2.5-32b-2xl40s-v0": 64_352,  # real 63,152: +1.9%
    "vllm-13882-qwen2.5-7b-int4-rtx4060-v0": 0,  # real 0: no room, as logged
    "vllm-13061-r1-distill-qwen-14b-2x4090-v0": 94_560,  # real 81,536: +16.0% (another process)
    "vllm-21348-qwen3-235b-fp8-4xh100-lmcache": 284_976,  # real 178,880: +59.3% (warned upper bound)
    "vllm-24577-qwen3-0.6b-a100-80gb-offline": 653_136,  # real 652,144: +0.2%
    "vllm-10517-llama3.1-8b-rtx3090-20k-v0": 33_456,  # real 31,232: +7.1% (V0 non-torch 0.35 GiB)
    "vllm-10517-llama3.1-8b-rtx3090-29k-v0": 26_416,  # real 23,648: +11.7% (the same, larger batch)
    "armlp-mistral-7b-gptq-gb10-0.11": 862_640,  # real 840,160: +2.7% (GB10, NVIDIA's 0.11 build)
    "awssample-qwen3-coder-30b-4xl40s-0.24": 1_060_768,  # real 1,037,152: +2.3% (4x L40S, TP=4)
    "oci-aqua-llama3.1-8b-a10-131k-v0": 36_352,  # real 37,696: -3.6% (A10, V0, 131K refused as logged)
    "grpocredit-rho-1b-h200-0.6.4-offline": 5_886_816,  # real 5,848,784: +0.7% (H200, V0)
    "tokenkaki-qwen3-8b-a100-40gb-0.9.2": 143_008,  # real 136,080: +5.1% (0.9.2 non-KV peak not modelled)
    "tokenkaki-qwen3-8b-a100-40gb-0.19.1": 142_272,  # real 140,960: +0.9% (same host and launch on 0.19.1)
    "kvcachelab-qwen2.5-7b-awq-rtx4080-0.26": 149_248,  # real 149,712: -0.3% (RTX 4080, WSL2)
    "ddiiwoong-qwen2.5-7b-l40s-0.8.5": 450_512,  # real 444,592: +1.3% (L40S, pip 0.8.5)
    "ddiiwoong-qwen2.5-7b-fp8-dynamic-l40s-0.8.5": 564_304,  # real 553,216: +2.0%
    "ddiiwoong-qwen2.5-7b-gptq-int4-l40s-0.8.5": 618_992,  # real 611,248: +1.3%
    "ddiiwoong-qwen3-14b-l40s-0.28": 78_208,  # real 75,824: +3.1% (L40S, 0.28 defaults)
    "ddiiwoong-qwen3-14b-awq-l40s-0.28": 197_600,  # real 194,192: +1.8%
    "ddiiwoong-qwen3-14b-awq-l40s-0.28-tuned": 204_384,  # real 203,264: +0.6%
    "ddiiwoong-qwen3-14b-awq-l4-0.28": 63_296,  # real 59,632: +6.1% (one run of the L4 launch)
    "ddiiwoong-qwen3-14b-awq-l4-0.28-replica": 63_296,  # real 67,696: -6.5% (another run of it)
    "ddiiwoong-qwen3-14b-awq-2xl4-tp2-0.28": 183_792,  # real 188,512: -2.5% (2x L4 TP=2, PCIe)
    "ddiiwoong-qwen3-14b-awq-2xl4-pp2-0.28": 185_344,  # real 184,000: +0.7% (2x L4 PP=2)
    # round 5: found after the planner was frozen at 66e40d2, planned with it unchanged
    "rldecision-qwen2.5-0.5b-rtx4090d-0.8.5": 1_640_400,  # real 1,606,496: +2.1% (RTX 4090 D, pip 0.8.5)
    "rldecision-smollm2-135m-rtx4090d-0.8.5": 963_584,  # real 946,384: +1.8% (the same host)
    "vllm-21524-qwen3-30b-a3b-2xh100-ray-2nodes": 858_016,  # real 878,416: -2.3% (TP=2 over 2 H100 nodes, Ray)
}


def source_group(url: str) -> str:
    """One source: an issue/PR thread, or a repository (the llm-d-planner sweep is one source)."""
    parts = url.removeprefix("https://github.com/").split("/")
    return "/".join(parts[:4]) if len(parts) > 3 and parts[2] in ("issues", "pull") else "/".join(parts[:2])


def test_fixtures_are_split_by_source_not_by_row() -> None:
    assert {fx.split for fx in FIXTURES} == {"fit", "test"}
    fit_sources = {source_group(fx.source) for fx in FIT_SET}
    test_sources = {source_group(fx.source) for fx in TEST_SET}
    assert not fit_sources & test_sources, f"a source on both sides: {fit_sources & test_sources}"


@pytest.mark.parametrize("fx", TEST_SET, ids=[fx.id for fx in TEST_SET])
def test_test_set_plans_are_pinned(fx: LogFixture) -> None:
    """A changed constant moves these: update the pin and docs/planner.md's test-set table together."""
    assert plan_for(fx).kv_cache_tokens == TEST_SET_PLANNED[fx.id]


def test_test_set_figures_as_reported_in_the_docs() -> None:
    """docs/planner.md: point within +-5% on 20/27 of the test set (15 sources); the band holds 27/27 in-sample;
    half-width 6.4% for V1 plans, 10.4% for V0 plans."""
    assert set(TEST_SET_PLANNED) == {fx.id for fx in TEST_SET}
    assert len(TEST_SET) == 27 and len({source_group(fx.source) for fx in TEST_SET}) == 15
    within = [fx.id for fx in TEST_SET if abs(error(fx)) <= TOLERANCE]
    assert len(within) == 20, within
    assert all(in_band(fx) for fx in TEST_SET), [fx.id for fx in TEST_SET if not in_band(fx)]
    v1 = {round(w, 3) for fx in TEST_SET if not is_v0(fx) and (w := half_width(fx)) is not None}
    v0 = {round(w, 3) for fx in TEST_SET if is_v0(fx) and (w := half_width(fx)) is not None}
    assert v1 == {0.064} and max(v0) == pytest.approx(0.104, abs=0.001)


def test_band_coverage_when_each_test_source_is_held_out_of_its_sizing() -> None:
    """The band's widths were sized on the corpus before round 5, so 24/24 of the older test logs is in-sample.
    Re-sized without each test source in turn, the held-out source's logs land inside on 24 of 27 (88.9%, target
    95%): the two runs of the L4 launch (ddiiwoong/newblog) are the only logs that show its +-6-7% run-to-run
    spread, and vllm#13061 (V0, another process) is below a V0 band sized from vllm#10517 alone (docs/planner.md)."""
    assert loso_band_coverage(TEST_SET, FIT_SET) == (24, 27)


ROUND_5 = [fx for fx in TEST_SET if fx.raw.get("round") == 5]


def test_round_5_logs_the_planner_had_never_seen() -> None:
    """docs/planner.md, round 5: three logs from two sources found after the planner (constants and band
    widths) was frozen at 66e40d2, planned with it unchanged: 3 of 3 within +-5% (-2.3% to +2.1%) and 3 of 3
    inside the band, whose widths were not re-sized on them. Too few to state a rate; the test pins them."""
    assert len(ROUND_5) == 3 and len({source_group(fx.source) for fx in ROUND_5}) == 2
    assert all(fx.split == "test" for fx in ROUND_5)
    assert [round(error(fx), 3) for fx in ROUND_5] == [0.021, 0.018, -0.023]
    assert all(in_band(fx) for fx in ROUND_5)


def test_v0_plans_get_the_wider_low_end_and_v1_plans_the_narrow_one() -> None:
    """V0 profiled a whole max_model_len batch eagerly: its plans carry the -13.8% low end, V1's -5.8%."""
    v0 = plan_for(next(fx for fx in TEST_SET if fx.id == "vllm-10517-llama3.1-8b-rtx3090-29k-v0")).band
    v1 = plan_for(next(fx for fx in TEST_SET if fx.id == "ddiiwoong-qwen3-14b-l40s-0.28")).band
    assert v0 is not None and v1 is not None
    assert (v0.below, v0.above) == (0.138, 0.070) and (v1.below, v1.above) == (0.058, 0.070)
    assert "V0" in v0.basis and "V1" in v1.basis


def test_the_band_holds_every_fitting_log_too() -> None:
    assert all(in_band(fx) for fx in FIT_SET), [fx.id for fx in FIT_SET if not in_band(fx)]


def test_a_plan_that_is_only_an_upper_bound_has_no_low_end() -> None:
    band = plan_for(next(fx for fx in FIXTURES if fx.id.endswith("4xh100-lmcache"))).band
    assert band is not None and band.kv_cache_tokens_low is None and band.max_concurrency_low is None
    assert band.kv_cache_tokens_high >= 284_976


# --- scripts/gpu-check planner-vs-real (its first GPU run records three more logs) ------------------


def test_gpu_check_turns_a_planner_vs_real_run_into_a_test_set_fixture(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    plan_file = tmp_path / "plan.json"
    plan_file.write_text('{"kv_cache_tokens": 1000000, "kv_cache_tokens_low": 863000, "kv_cache_tokens_high": 1046000}')
    log = tmp_path / "serve.log"
    log.write_text(
        "(EngineCore pid=1) INFO [gpu_model_runner.py:1] Model loading took 1.12 GiB memory and 2.0 seconds\n"
        "(EngineCore pid=1) INFO [gpu_worker.py:2] Available KV cache memory: 60.00 GiB\n"
        "(EngineCore pid=1) INFO [kv_cache_utils.py:3] GPU KV cache size: 561,696 tokens\n"
        "(EngineCore pid=1) INFO [kv_cache_utils.py:4] Maximum concurrency for 4,096 tokens per request: 137.13x\n"
        "(EngineCore pid=1) INFO [core.py:5] unrelated line\n"
    )
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check_helpers.py"
    argv = [sys.executable, str(script), "fixture", "qwen3-0.6b", str(plan_file), str(log), "h200", "0.26.0"]
    out = subprocess.run([*argv, "0.5", "4096"], capture_output=True, text=True, check=True).stdout
    (entry,) = yaml.safe_load(out)
    assert entry["split"] == "test" and entry["model"] == "qwen3-0.6b" and entry["gpu"] == "h200"
    assert entry["reported"]["kv_tokens"] == 561_696 and entry["planned"]["kv_cache_tokens"] == 1_000_000
    assert "GPU KV cache size" in entry["excerpt"] and "unrelated" not in entry["excerpt"]
