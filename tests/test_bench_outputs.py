"""`gpufleet bench` never overwrites a file it did not write (issue 20 §4); --plot DIR and a non-UTF-8
--prompts file are one `error:` line. Targets are the STAND-IN upstream (standin_upstream.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpufleet.bench.outputs import check_output, is_gpufleet_plot
from gpufleet.errors import ConfigError
from tests.repo_paths import REPO
from tests.standin_upstream import StandInUpstream

pytestmark = pytest.mark.processes  # runs child processes: seconds each (make test-fast leaves them out)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


def bench(standin: StandInUpstream, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable,
        "-m",
        "gpufleet.cli",
        "bench",
        f"{standin.url}#m",
        "--concurrency",
        "1",
        "--requests",
        "1",
        "--max-tokens",
        "2",
        "--no-latest",
        *args,
    ]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "GPUFLEET_CACHE": str(tmp_path / "cache")},
    )


def one_error_line(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_plot_over_a_foreign_file_is_refused_and_the_file_kept(standin: StandInUpstream, tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0:root:/root:/bin/bash\n")
    one_error_line(bench(standin, tmp_path, "--plot", str(victim)), "refusing to overwrite")
    assert victim.read_text().startswith("root:x")
    one_error_line(bench(standin, tmp_path, "--json", str(victim)), "refusing to overwrite")
    assert victim.read_text().startswith("root:x")


def test_plot_and_report_gpufleet_wrote_may_be_overwritten(standin: StandInUpstream, tmp_path: Path) -> None:
    png, report = tmp_path / "bench.png", tmp_path / "bench.json"
    for _ in range(2):
        done = bench(standin, tmp_path, "--plot", str(png), "--json", str(report))
        assert done.returncode == 0, done.stderr
    assert is_gpufleet_plot(png) and "runs" in json.loads(report.read_text())


def test_force_overwrites_a_foreign_file(standin: StandInUpstream, tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    other.write_bytes(b"not ours")
    assert bench(standin, tmp_path, "--plot", str(other), "--force").returncode == 0
    assert is_gpufleet_plot(other)


def test_plot_into_a_directory_is_one_error_line(standin: StandInUpstream, tmp_path: Path) -> None:
    one_error_line(bench(standin, tmp_path, "--plot", str(tmp_path)), "is a directory")


def test_non_utf8_prompts_is_one_error_line(standin: StandInUpstream, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("caf\xe9\n".encode("latin-1"))
    one_error_line(bench(standin, tmp_path, "--prompts", str(prompts)), "not UTF-8 text (byte 0xe9 at offset 3)")


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.png"
    target.write_bytes(b"x")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_output(link, "--plot", kind="png", force=False)
