"""Several processes preparing one cache at once (issue 20 §4): two `gpufleet models prepare` or two first
`gpufleet serve` on a new machine. One assembles under a lock, each into its own temporary file, and the
stamp is written only after the file on disk matched the sha256; a killed preparer leaves no stamp.

The split model here is made up (three small STAND-IN packages written by the test, not real weights), so
the race runs in seconds; the real packaged models go through the same `prepare`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.repo_paths import REPO

PART_BYTES = 8 * 1024 * 1024
PARTS = 3

SCRIPT = """
import sys, time
from gpufleet.model_packages import PackagedModel, prepare
model = PackagedModel(model_id="standin-split", description="test", size_bytes={size}, sha256="{sha}",
                      parts=tuple((f"standin_part{{i}}", "data/part.bin") for i in range(1, {parts} + 1)),
                      requirements_file="none")
slow = len(sys.argv) > 1
print(prepare(model, (lambda done, total: time.sleep(0.05)) if slow else None))
"""


@pytest.fixture
def standin_packages(tmp_path: Path) -> tuple[Path, str]:
    """Three importable packages holding one part each; returns (their folder, the whole file's sha256)."""
    site = tmp_path / "site"
    digest = hashlib.sha256()
    for i in range(1, PARTS + 1):
        package = site / f"standin_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        data = os.urandom(PART_BYTES)
        (package / "data" / "part.bin").write_bytes(data)
        digest.update(data)
    return site, digest.hexdigest()


def preparer(site: Path, sha: str, cache: Path, *args: str) -> subprocess.Popen[str]:
    script = SCRIPT.format(size=PART_BYTES * PARTS, sha=sha, parts=PARTS)
    env = {
        **os.environ,
        "GPUFLEET_CACHE": str(cache),
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_concurrent_preparers_all_succeed_with_one_verified_file(
    standin_packages: tuple[Path, str], tmp_path: Path
) -> None:
    site, sha = standin_packages
    cache = tmp_path / "cache"
    runs = [preparer(site, sha, cache) for _ in range(4)]
    results = [(*p.communicate(timeout=300), p.returncode) for p in runs]
    for _, err, code in results:
        assert code == 0 and "Traceback" not in err, err
    paths = {out.strip() for out, _, _ in results}
    assert len(paths) == 1
    path = Path(paths.pop())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert Path(f"{path}.sha256").read_text().strip() == sha
    assert not list(path.parent.glob("*.partial"))


def test_killed_preparer_leaves_no_stamp_and_the_next_one_finishes(
    standin_packages: tuple[Path, str], tmp_path: Path
) -> None:
    site, sha = standin_packages
    cache = tmp_path / "cache"
    models = cache / "models"
    slow = preparer(site, sha, cache, "slow")
    deadline = time.monotonic() + 60
    while not list(models.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(models.glob("*.partial")), "the preparer never started writing"
    slow.send_signal(signal.SIGKILL)
    slow.communicate(timeout=30)  # reaps it and closes its pipes
    assert not (models / "standin-split.gguf.sha256").exists()
    again = preparer(site, sha, cache)
    code, err = again.wait(timeout=300), again.communicate()[1]
    assert code == 0, err
    assert (models / "standin-split.gguf.sha256").read_text().strip() == sha
    assert not list(models.glob("*.partial"))
