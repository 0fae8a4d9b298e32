"""gpufleet bench without real engines: statistics and target parsing (tables), the report, the PNG plot,
the latest-report directory, load generation and the CLI against the STAND-IN upstream (tests/standin_upstream.py).
The real engines are benchmarked in tests/test_bench_real.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.bench.latest import PLOT_NAME, REPORT_NAME, write_latest
from gpufleet.bench.load import load_prompts, run_level
from gpufleet.bench.plot import PLOT_SIZE_PX, plot_report
from gpufleet.bench.report import (
    BenchReport,
    BenchSettings,
    TargetInfo,
    TargetRun,
    gateway_overhead,
    table_rows,
)
from gpufleet.bench.stats import RequestSample, distribution, percentile, summarize
from gpufleet.bench.targets import BenchTarget, parse_concurrency, parse_target, parse_targets
from gpufleet.cli import app
from gpufleet.errors import ConfigError
from gpufleet.paths import bench_latest_dir
from tests.standin_upstream import StandInUpstream

GATEWAY = "http://127.0.0.1:8000/v1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([], 50, None),
        ([3.0], 99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.5),  # order does not matter
        ([float(i) for i in range(1, 101)], 95, 95.05),
        ([float(i) for i in range(1, 101)], 99, 99.01),
    ],
)
def test_percentile_interpolates_between_closest_ranks(values: list[float], pct: float, expected: float | None) -> None:
    result = percentile(values, pct)
    assert result == expected if expected is None else result == pytest.approx(expected)


def test_percentile_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_distribution_of_nothing_has_no_figures() -> None:
    assert distribution([]).as_dict() == {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}


@pytest.mark.parametrize(
    ("samples", "wall_s", "req_per_s", "tok_per_s", "failed"),
    [
        ([RequestSample(True, 0.1, 1.0, 10, (0.1,) * 9)] * 4, 2.0, 2.0, 20.0, 0),
        ([RequestSample(True, 0.1, 1.0, 10), RequestSample(False, error="HTTP 503: busy")], 1.0, 1.0, 10.0, 1),
        ([RequestSample(False, error="x")] * 3, 1.0, 0.0, 0.0, 3),  # fast errors are not throughput
        ([], 0.0, 0.0, 0.0, 0),
    ],
)
def test_summarize_counts_only_successful_requests_in_rates(
    samples: list[RequestSample], wall_s: float, req_per_s: float, tok_per_s: float, failed: int
) -> None:
    stats = summarize(samples, wall_s)
    assert (stats.req_per_s, stats.output_tok_per_s, stats.failed) == (req_per_s, tok_per_s, failed)
    assert stats.succeeded + stats.failed == stats.requests == len(samples)


def test_summarize_pools_inter_token_gaps_and_groups_errors() -> None:
    samples = [
        RequestSample(True, 0.2, 1.0, 3, (0.1, 0.3)),
        RequestSample(True, 0.4, 2.0, 2, (0.5,)),
        RequestSample(False, error="HTTP 500: boom"),
        RequestSample(False, error="HTTP 500: boom"),
    ]
    stats = summarize(samples, 4.0)
    assert stats.itl.count == 3 and stats.itl.p50 == pytest.approx(0.3)
    assert stats.ttft.mean == pytest.approx(0.3)
    assert stats.errors == {"HTTP 500: boom": 2}


@pytest.mark.parametrize(
    ("text", "label", "base_url", "model", "via_gateway"),
    [
        ("smollm2", "smollm2", GATEWAY, "smollm2", True),
        ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B", GATEWAY, "Qwen/Qwen3-8B", True),
        ("fast=smollm2", "fast", GATEWAY, "smollm2", True),
        ("http://127.0.0.1:9001/v1#smollm2", "smollm2@127.0.0.1:9001", "http://127.0.0.1:9001/v1", "smollm2", False),
        ("http://127.0.0.1:9001#smollm2", "smollm2@127.0.0.1:9001", "http://127.0.0.1:9001/v1", "smollm2", False),
        ("vllm=http://127.0.0.1:9001/v1/#s", "vllm", "http://127.0.0.1:9001/v1", "s", False),
        ("smollm2=http://127.0.0.1:9001/v1", "smollm2", "http://127.0.0.1:9001/v1", "smollm2", False),
        ("gw=http://127.0.0.1:8000/v1#smollm2", "gw", GATEWAY, "smollm2", True),
    ],
)
def test_parse_target_forms(text: str, label: str, base_url: str, model: str, via_gateway: bool) -> None:
    assert parse_target(text, gateway=GATEWAY) == BenchTarget(label, base_url, model, via_gateway)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("http://127.0.0.1:9001/v1", "name the model after '#'"),
        ("bad label=http://h:1/v1#m", "label"),
        ("two words", "neither a model name nor"),
        ("ftp://host/v1#m", "neither a model name nor"),
    ],
)
def test_parse_target_rejects_with_the_argument_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_target(text, gateway=GATEWAY)


def test_duplicate_labels_are_rejected() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_targets(["smollm2", "smollm2"], gateway=GATEWAY)


@pytest.mark.parametrize(("text", "levels"), [("1,4,16", [1, 4, 16]), ("4, 1,4", [1, 4]), ("8", [8])])
def test_parse_concurrency(text: str, levels: list[int]) -> None:
    assert parse_concurrency(text) == levels


@pytest.mark.parametrize("text", ["0", "1,x", "-2", ""])
def test_parse_concurrency_rejects_non_positive_levels(text: str) -> None:
    with pytest.raises(ConfigError, match="--concurrency"):
        parse_concurrency(text)


def test_load_prompts_reads_lines_and_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text('plain prompt\n\n{"prompt": "from json"}\n', encoding="utf-8")
    assert load_prompts(path) == ["plain prompt", "from json"]
    path.write_text('{"text": 1}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 1 has no string \"prompt\""):
        load_prompts(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_prompts(tmp_path / "missing.txt")


def _run(label: str, concurrency: int, ttft: float, tokens: int, wall_s: float) -> TargetRun:
    return TargetRun(label, concurrency, (RequestSample(True, ttft, ttft + 1, tokens, (0.05, 0.07)),) * 2, wall_s)


def _report() -> BenchReport:
    gw = BenchTarget("smollm2", GATEWAY, "smollm2", True)
    direct = BenchTarget("smollm2 (direct)", "http://127.0.0.1:9001/v1", "smollm2", False)
    return BenchReport(
        BenchSettings((1, 4), 2, 16, 6),
        (TargetInfo(gw, planner_decode_tok_s=41.25), TargetInfo(direct, direct_of="smollm2")),
        (
            _run("smollm2", 1, 0.30, 10, 2.0),
            _run("smollm2 (direct)", 1, 0.25, 10, 1.6),
            _run("smollm2", 4, 0.50, 10, 2.0),
            _run("smollm2 (direct)", 4, 0.40, 10, 2.0),
        ),
    )


def test_report_json_has_summary_raw_samples_and_the_gateway_cost() -> None:
    report = json.loads(json.dumps(_report().as_dict()))
    assert report["version"] == 2 and report["settings"]["concurrency"] == [1, 4]
    first = report["runs"][0]
    assert first["succeeded"] == 2 and first["output_tok_per_s"] == 10.0 and first["req_per_s"] == 1.0
    assert first["samples"]["ttft_s"] == [0.3, 0.3] and len(first["samples"]["itl_s"]) == 4
    assert report["targets"][0]["planner_decode_tok_s"] == 41.2  # rounded to 0.1 (banker's: 41.25 -> 41.2)
    assert report["gateway_overhead"] == [
        {
            "target": "smollm2",
            "direct": "smollm2 (direct)",
            "mode": "closed",
            "concurrency": 1,
            "rate": None,
            "ttft_p50_added_ms": 50.0,
            "latency_p50_added_ms": 50.0,
            "tok_per_s_ratio": 0.8,
        },
        {
            "target": "smollm2",
            "direct": "smollm2 (direct)",
            "mode": "closed",
            "concurrency": 4,
            "rate": None,
            "ttft_p50_added_ms": 100.0,
            "latency_p50_added_ms": 100.0,
            "tok_per_s_ratio": 1.0,
        },
    ]


def test_gateway_overhead_skips_levels_without_a_direct_run() -> None:
    runs = [
        {"target": "a", "concurrency": 1, "ttft_s": {"p50": 0.2}, "latency_s": {"p50": 1.0}, "output_tok_per_s": 0.0}
    ]
    assert gateway_overhead(runs, {"a": "a (direct)"}) == []


def test_table_rows_sit_side_by_side_per_concurrency_with_the_planner_estimate() -> None:
    rows = table_rows(_report().as_dict())
    assert [(row[0], row[1]) for row in rows] == [
        ("smollm2", "1"),
        ("smollm2 (direct)", "1"),
        ("smollm2", "4"),
        ("smollm2 (direct)", "4"),
    ]
    assert rows[0][2:6] == ["2/2", "1.00", "10.0", "300 / 300 / 300"]
    assert rows[0][7] == "41" and rows[1][7] == "-"


def _assert_png(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.load()
        assert image.size == PLOT_SIZE_PX


def test_plot_is_a_real_png_of_the_documented_size(tmp_path: Path) -> None:
    path = plot_report(_report().as_dict(), tmp_path / "sub" / "bench.png")
    _assert_png(path)


def test_write_latest_replaces_the_previous_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path))
    assert bench_latest_dir() == tmp_path / "bench" / "latest"
    (bench_latest_dir()).mkdir(parents=True)
    (bench_latest_dir() / "stale.png").write_bytes(b"old")
    written = write_latest(_report().as_dict())
    assert written == bench_latest_dir()
    assert sorted(p.name for p in written.iterdir()) == [PLOT_NAME, REPORT_NAME]
    assert json.loads((written / REPORT_NAME).read_text())["version"] == 2
    _assert_png(written / PLOT_NAME)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


async def test_run_level_keeps_the_concurrency_and_times_every_request(standin: StandInUpstream) -> None:
    standin.behaviour, standin.delay_s = "ok", 0.0
    target = BenchTarget("standin", standin.url, "m", via_gateway=False)
    seen: list[RequestSample] = []
    samples, wall_s = await run_level(target, ["hi"], concurrency=3, requests=7, max_tokens=5, on_done=seen.append)
    assert len(samples) == len(seen) == 7 and wall_s > 0
    assert all(s.ok and s.output_tokens == 5 for s in samples)  # the usage chunk's count
    assert all(s.ttft_s is not None and s.latency_s is not None and s.ttft_s <= s.latency_s for s in samples)
    assert all(len(s.itl_s) == 4 for s in samples)  # 5 text chunks -> 4 gaps
    body = standin.received[-1]
    assert body["stream"] is True and body["temperature"] == 0 and body["max_tokens"] == 5


async def test_run_level_records_http_errors_with_the_upstream_message(standin: StandInUpstream) -> None:
    standin.behaviour = "429"
    try:
        target = BenchTarget("standin", standin.url, "m", via_gateway=False)
        samples, _ = await run_level(target, ["hi"], concurrency=2, requests=2, max_tokens=5)
    finally:
        standin.behaviour = "ok"
    assert [s.error for s in samples] == ["HTTP 429: rate limited"] * 2


def test_cli_bench_writes_table_json_plot_and_latest(
    standin: StandInUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    standin.behaviour = "ok"
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            f"a={standin.url}#m",
            f"{standin.url}#m",
            "--concurrency",
            "1,2",
            "--requests",
            "3",
            "--max-tokens",
            "4",
            "--json",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [t["label"] for t in report["targets"]] == ["a", f"m@127.0.0.1:{standin.port}"]
    assert [(r["target"], r["concurrency"], r["succeeded"]) for r in report["runs"]] == [
        ("a", 1, 3),
        ("a", 2, 3),
        (f"m@127.0.0.1:{standin.port}", 1, 3),
        (f"m@127.0.0.1:{standin.port}", 2, 3),
    ]
    assert "out tok/s" in result.stdout
    _assert_png(png)
    assert (tmp_path / "cache" / "bench" / "latest" / REPORT_NAME).is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "x", "--concurrency", "0"], "--concurrency"),
        (["bench", "http://127.0.0.1:1/v1"], "name the model after '#'"),
        (["bench", "http://127.0.0.1:1/v1#m", "--compare-direct"], "--compare-direct needs a gateway target"),
    ],
)
def test_cli_bad_input_is_a_message_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_planner_decode_estimate_only_for_planned_vllm_models() -> None:
    from gpufleet.bench.estimate import decode_estimate
    from gpufleet.config import parse_config

    vllm = {"engine": "vllm", "model": "Qwen/Qwen3-8B", "vllm_version": "0.11.0"}
    config = parse_config(
        {
            "models": {
                "gpu": {**vllm, "plan": True, "gpu": "rtx4090", "aliases": ["q8"]},
                "cpu": {**vllm, "plan": True, "device": "cpu"},
                "unplanned": vllm,
                "embedded": {"engine": "llamacpp", "source": "package:smollm2-135m-instruct"},
            }
        },
        file="test",
    )
    estimate, note = decode_estimate(config, "q8")  # an alias names the model too
    assert estimate is not None and 5 < estimate < 200 and note is None
    assert decode_estimate(config, "cpu")[0] is None and "CPU" in str(decode_estimate(config, "cpu")[1])
    assert decode_estimate(config, "unplanned") == (None, "plan: false (the planner did not size this model)")
    assert decode_estimate(config, "embedded") == (None, None)
    assert decode_estimate(config, "not-configured") == (None, None)
