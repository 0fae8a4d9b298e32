"""Learning from launches (issue 24): the planner's error on this host is recorded and used.

The supervisor records what vLLM logged ("GPU KV cache size") for a planned launch; `gpufleet plan`
then uses the measured figure for the same launch and corrects similar ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.catalog import get_gpu, get_model
from gpufleet.cli import app
from gpufleet.config import VllmModel, parse_config
from gpufleet.engine_supervisor.slot import _kv_cache_view
from gpufleet.engines.vllm_engine import VllmEngine
from gpufleet.errors import PlanError
from gpufleet.planner import Plan, plan_model
from gpufleet.planner.calibration import Measurement, calibrate, launch_key
from gpufleet.planner.calibration_file import (
    calibration_extra,
    load_measurements,
    record_from_launch,
    record_measurement,
)

runner = CliRunner()


def h100_plan(context: int = 8192, util: float = 0.92) -> Plan:
    return plan_model(get_model("qwen3-8b").spec, get_gpu("h100"), context=context, gpu_memory_utilization=util)


def test_the_same_launch_gets_the_figure_measured_here() -> None:
    p = h100_plan()
    m = Measurement(launch_key(p), p.kv_cache_tokens, 400_000, "2026-12-07T10:00:00Z")
    c = calibrate(p, [m])
    assert c.kv_cache_tokens == 400_000 and c.num_blocks == 400_000 // 16
    assert c.calibration is not None and c.calibration.kind == "measured"
    assert c.calibration.planned_tokens == p.kv_cache_tokens and "measured here" in c.calibration.note
    assert c.band is not None and c.band.kv_cache_tokens_low is not None
    assert c.band.kv_cache_tokens_low < 400_000 < c.band.kv_cache_tokens_high
    assert c.max_concurrency == pytest.approx(400_000 / 8192, rel=0.01)


def test_the_newest_measurement_of_a_launch_wins() -> None:
    p = h100_plan()
    old = Measurement(launch_key(p), p.kv_cache_tokens, 390_000, "2026-12-01T10:00:00Z")
    new = Measurement(launch_key(p), p.kv_cache_tokens, 401_008, "2026-12-07T10:00:00Z")
    assert calibrate(p, [new, old]).kv_cache_tokens == 401_008


def test_a_similar_launch_is_corrected_by_what_similar_launches_measured() -> None:
    measured_at_8k = h100_plan(8192)
    m = Measurement(launch_key(measured_at_8k), 400_000, 360_000, "2026-12-07T10:00:00Z")  # logged 10% less
    p = h100_plan(32768)  # another max_model_len: not the same launch, but the same GPU/model/version
    c = calibrate(p, [m])
    assert c.calibration is not None and c.calibration.kind == "corrected"
    assert c.calibration.factor == pytest.approx(0.9) and c.calibration.launches == 1
    assert c.kv_cache_tokens == int(p.kv_cache_tokens * 0.9) // 16 * 16
    assert "-10.0%" in c.calibration.note


def test_launches_on_another_gpu_or_model_change_nothing() -> None:
    p = h100_plan()
    other_gpu = plan_model(get_model("qwen3-8b").spec, get_gpu("a100-80gb"), context=8192)
    other_model = plan_model(get_model("qwen3-14b").spec, get_gpu("h100"), context=8192)
    ms = [Measurement(launch_key(q), 1000, 500, "2026-12-07T10:00:00Z") for q in (other_gpu, other_model)]
    assert calibrate(p, ms) == p


def test_the_calibration_file_round_trips_and_replaces_a_relaunch(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    key = launch_key(h100_plan())
    record_measurement(key, 420_208, 418_688, path)
    record_measurement(key, 420_208, 418_704, path)  # the same launch again: one entry, the newest
    stored = load_measurements(path)
    assert [(m.planned_tokens, m.measured_tokens) for m in stored] == [(420_208, 418_704)]
    assert stored[0].error == pytest.approx((420_208 - 418_704) / 418_704)
    assert json.loads(path.read_text())["measurements"][0]["key"]["gpu"] == "h100-sxm"


@pytest.mark.parametrize(
    "body",
    ["not json", "[1, 2]", '{"measurements": {"a": 1}}', '{"measurements": [{"key": {"gpu": "x"}}]}'],
)
def test_a_damaged_calibration_file_is_a_clear_error_naming_it(tmp_path: Path, body: str) -> None:
    """Attacker's test: whatever is in the file, the answer is a PlanError with the path, not a traceback."""
    path = tmp_path / "calibration.json"
    path.write_text(body)
    with pytest.raises(PlanError, match=r"calibration\.json"):
        load_measurements(path)
    # ... and a launch replaces the damaged file instead of failing.
    record_measurement(launch_key(h100_plan()), 1, 2, path)
    assert len(load_measurements(path)) == 1


def test_a_planned_vllm_launch_carries_its_key_and_the_supervisor_hook_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path))
    cfg = {"engine": "vllm", "model": "Qwen/Qwen3-8B", "plan": True, "gpu": "h100", "max_model_len": 8192}
    cfg |= {"vllm_version": "0.19.0", "python": "/usr/bin/python3"}
    model = parse_config({"models": {"q": cfg}}).models["q"]
    assert isinstance(model, VllmModel)
    engine = VllmEngine()
    spec = engine.launch_spec("q", model, engine.resolve("q", model), 18000)
    assert json.loads(spec.extra["calibration_key"])["gpu"] == "h100-sxm"
    planned = int(spec.extra["planned_kv_tokens"])
    recorded = record_from_launch(spec.extra, 418_688)
    assert recorded is not None and load_measurements() == [recorded]
    assert recorded.planned_tokens == planned
    assert record_from_launch({"vllm_version": "0.19.0"}, 1) is None  # an unplanned launch records nothing


def test_status_shows_the_planners_error_for_a_running_engine() -> None:
    class FakeLog:  # the fields _kv_cache_view reads from a VllmStartupLog
        kv_cache = type(
            "Kv",
            (),
            {
                "device": "GPU",
                "tokens": 400_000,
                "max_concurrency": 48.8,
                "concurrency_tokens": 8192,
                "available_gib": 55.0,
            },
        )()

    view = _kv_cache_view(FakeLog(), {"planned_kv_tokens": "420000"})  # type: ignore[arg-type]
    assert view is not None and view["planned_tokens"] == 420_000 and view["planner_error"] == 0.05


def test_gpufleet_plan_uses_the_measured_figure_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path))
    args = ["plan", "qwen3-8b", "--gpu", "h100", "--context", "8192", "--vllm-version", "0.19.0", "--util", "0.95"]
    before = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert before["calibration"] is None
    p = plan_model(
        get_model("qwen3-8b").spec, get_gpu("h100"), context=8192, vllm_version="0.19.0", gpu_memory_utilization=0.95
    )
    record_from_launch(calibration_extra(launch_key(p), p.kv_cache_tokens), 418_688)
    after = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert after["kv_cache_tokens"] == 418_688 and after["calibration"]["kind"] == "measured"
    assert after["calibration"]["planned_tokens"] == before["kv_cache_tokens"]
    human = runner.invoke(app, args)
    assert human.exit_code == 0 and "measured here" in human.output
    ignored = json.loads(runner.invoke(app, [*args, "--json", "--ignore-measured"]).stdout)
    assert ignored["kv_cache_tokens"] == before["kv_cache_tokens"] and ignored["calibration"] is None
    similar = json.loads(runner.invoke(app, [*args[:-4], "--vllm-version", "0.19.0", "--json"]).stdout)
    assert similar["calibration"]["kind"] == "corrected"  # util 0.92: similar, corrected by the ratio
