"""Model names cannot lead files out of the cache (issue 20 §4): `.`/`..` segments and a leading `/` are
refused at load (exit 2 naming the key), and every file named after a model is one safe component."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpufleet.config import parse_config
from gpufleet.engines.transformers_engine import run_dir, served_link
from gpufleet.errors import ConfigError, EngineError
from gpufleet.model_names import file_stem, name_problem
from tests.repo_paths import REPO

BAD_NAMES = ["a/../../../../../victim.txt", "a/./b", "a/..", "../x", "a//b", "a/", "a\\..\\b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_name_with_path_segments_is_refused_at_load_naming_the_key(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"models": {name: {"engine": "remote", "url": "http://127.0.0.1:9/v1"}}})
    assert f"models.{name}" in str(err.value)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_alias_with_path_segments_is_refused_too(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"models": {"ok": {"engine": "remote", "url": "http://127.0.0.1:9/v1", "aliases": [name]}}})
    assert "models.ok" in str(err.value)


@pytest.mark.parametrize("name", ["Qwen/Qwen3-8B-AWQ", "qwen3:8b", "smollm2", "a.b/c..d", "org/model@v1+x"])
def test_ordinary_names_still_load(name: str) -> None:
    assert name_problem(name) is None
    parse_config({"models": {name: {"engine": "remote", "url": "http://127.0.0.1:9/v1"}}})


@pytest.mark.processes
def test_serve_exits_2_naming_the_key(tmp_path: Path) -> None:
    name = "a/../../../../../victim.txt"
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump({"models": {name: {"engine": "remote", "url": "http://127.0.0.1:9/v1"}}}))
    done = subprocess.run(
        [sys.executable, "-m", "gpufleet.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}: models.{name}: ") and "'..' path segment" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["Qwen/Qwen3-8B", "a/../../x", "..", "qwen3:8b", "a b", "é/ü"])
def test_file_stem_is_one_safe_component(name: str) -> None:
    stem = file_stem(name)
    assert "/" not in stem and "\\" not in stem and stem not in (".", "..") and not stem.startswith(".")
    assert Path(stem).name == stem


def test_file_stems_keep_similar_names_apart() -> None:
    assert file_stem("a/b") != file_stem("a_b") and file_stem("smollm2") == "smollm2"


def test_transformers_link_stays_in_its_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with pytest.raises(EngineError):
        served_link("a/../../../../../../" + str(victim).lstrip("/"), model_dir)
    assert victim.read_text() == "keep me"
    link = served_link("Org/Model", model_dir)
    assert link.resolve() == model_dir.resolve() and run_dir("Org/Model") in link.parents
