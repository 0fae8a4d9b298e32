"""`gpufleet auto explain|check`: the rules as the gateway builds them from a config, on the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.repo_paths import REPO

pytestmark = pytest.mark.processes  # runs child processes: seconds each (make test-fast leaves them out)


def auto(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "auto", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def config_with(tmp_path: Path, **auto_settings: object) -> Path:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": {"m": {"engine": "remote", "url": "http://127.0.0.1:9/v1"}},
                "router": {"auto": {"routine": "m", "moderate": "m", "complex": "m", **auto_settings}},
            }
        )
    )
    return path


def test_explain_names_tier_score_and_signals() -> None:
    done = auto("explain", "Prove that there are infinitely many primes.")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "complex, score 5: math, proof\n"


def test_explain_uses_the_configs_weights(tmp_path: Path) -> None:
    done = auto(
        "explain",
        "Prove that there are infinitely many primes.",
        "--config",
        str(config_with(tmp_path, weights={"proof": 0})),
    )
    assert done.stdout == "moderate, score 2: math, proof\n"  # proof fires, but counts 0


def test_check_reports_each_split_and_the_whole_shipped_set() -> None:
    done = auto("check")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[:6]] == ["tune", "holdout", "holdout2", "tune3", "holdout3", "all"]
    right, total = lines[5].split()[1].split("/")
    assert int(total) >= 150 and int(right) / int(total) >= 0.85
    assert "want \\ got    routine  moderate   complex" in done.stdout


def test_check_on_own_examples_lists_the_misses(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                "prompts": [
                    {"id": "hi", "tier": "routine", "request": {"messages": [{"role": "user", "content": "hi"}]}},
                    {"id": "proof", "tier": "routine", "request": {"prompt": "Prove that sqrt(2) is irrational."}},
                ]
            }
        )
    )
    done = auto("check", "--examples", str(mine), "--misses")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["all", "1/2", "50.0%"]
    assert done.stdout.splitlines()[-1] == "proof: want routine, got complex (complex, score 5: math, proof)"


def test_bad_examples_or_config_exit_2_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"prompts": [{"tier": "huge", "request": {"prompt": "x"}}]}))
    done = auto("check", "--examples", str(bad))
    assert (done.returncode, done.stderr) == (
        2,
        f"error: {bad}: prompts[0].tier: 'huge' is not one of routine, moderate, complex\n",
    )
    done = auto("check", "--config", str(config_with(tmp_path, complex_at=1.0)))
    assert done.returncode == 2 and done.stderr.startswith(f"error: {tmp_path / 'gpufleet.yaml'}: router.auto")
    assert "Traceback" not in done.stderr
