"""`gpufleet serve` refuses bad input at load with exit 2 and a message naming file, key and reason (issue 12).

Before: a non-UTF-8 config was a traceback (exit 1), a taken port exit 3, and `source: package:nope` loaded
and answered 503 on every request.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpufleet.model_packages import PACKAGED_MODELS
from tests.repo_paths import REPO

pytestmark = pytest.mark.processes  # runs child processes: seconds each (make test-fast leaves them out)


def serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "serve", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def remote_config(tmp_path: Path) -> Path:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump({"models": {"rig": {"engine": "remote", "url": "http://127.0.0.1:9/v1"}}}))
    return path


def test_non_utf8_config_exits_2_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("models:\n  caf\xe9:\n    engine: remote\n".encode("latin-1"))
    done = serve(path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}: not UTF-8 text (byte 0xe9 at offset 13)")
    assert "Traceback" not in done.stderr


def test_port_in_use_exits_2_with_the_address_and_the_fix(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve(remote_config(tmp_path), "--port", str(port))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "--port" in done.stderr and "server.port" in done.stderr
    assert "Traceback" not in done.stderr


def test_unknown_packaged_model_exits_2_at_load_listing_the_packaged_ones(tmp_path: Path) -> None:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"engine": "llamacpp", "source": "package:nope"}}}))
    done = serve(path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}: models.m.source: unknown packaged model 'package:nope'")
    for name in PACKAGED_MODELS:
        assert f"package:{name}" in done.stderr
    assert "gpufleet models packaged" in done.stderr
