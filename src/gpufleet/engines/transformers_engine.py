"""The Transformers engine: `transformers serve --continuous-batching` on a local HF directory, a cold standby.

gpufleet never imports transformers: it runs the CLI module of the environment `gpufleet engines install
transformers` made (torch 2.13.0 CPU, transformers[serving] pinned; engines/vllm_install.py ENGINES).

`transformers serve` has no --served-model-name: pinned to a model, it answers only requests whose "model"
equals the id it was started with. So the engine runs in a directory of its own holding a symlink named like
the gpufleet model, and is started with that relative name: requests for that name (what the gateway sends)
are served, and the model still loads from the local directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpufleet.config import TransformersModel
from gpufleet.engines.base import LaunchSpec, engine_python, local_urls
from gpufleet.errors import EngineError
from gpufleet.model_names import file_stem, name_problem
from gpufleet.paths import cache_root

CLI_MODULE = "transformers.cli.transformers"
ENGINE_NAME = "transformers"
# A local directory needs no hub; offline also keeps the CLI's daily update check from calling out.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def resolve_transformers_python(python: str | None) -> Path:
    """The interpreter for a transformers model: a path, or an installed engine name (default 'transformers')."""
    return engine_python(python or ENGINE_NAME, kind="transformers", needs="transformers[serving]")


def run_dir(name: str) -> Path:
    """The engine's working directory, holding the symlink named after the model."""
    return cache_root() / "run" / "transformers" / file_stem(name)


def served_link(name: str, model_dir: Path) -> Path:
    """(Re)make run_dir(name)/<name> -> model_dir; returns the link. `name` may contain '/' (nested link)."""
    if (problem := name_problem(name)) is not None:  # the config refuses these; a link must never leave run_dir
        raise EngineError(f"model name {name!r} {problem}: it cannot name a file")
    link = run_dir(name) / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.resolve() == model_dir.resolve():
            return link
        link.unlink()
    link.symlink_to(model_dir.resolve(), target_is_directory=True)
    return link


def serve_argv(python: Path, name: str, model: TransformersModel, port: int) -> list[str]:
    """The command line of `transformers serve` for `model` on 127.0.0.1:`port` (pure)."""
    argv = [
        str(python),
        "-m",
        CLI_MODULE,
        "serve",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        model.device,
        "--dtype",
        model.dtype,
        "--log-level",
        "info",
    ]
    if model.continuous_batching:
        argv.append("--continuous-batching")
        if model.cb_num_blocks is not None:
            argv += ["--cb-num-blocks", str(model.cb_num_blocks)]
        if model.cb_max_batch_tokens is not None:
            argv += ["--cb-max-batch-tokens", str(model.cb_max_batch_tokens)]
    return argv + list(model.extra_args)


@dataclass(frozen=True)
class TransformersLaunch:
    """A transformers model resolved for launching: its interpreter and its model directory."""

    python: Path
    model_dir: Path


class TransformersEngine:
    """Builds the launch spec of `transformers serve` for one model directory."""

    kind = "transformers"

    def resolve(self, name: str, model: TransformersModel) -> TransformersLaunch:
        model_dir = Path(model.model).expanduser()
        if not (model_dir / "config.json").is_file():
            raise EngineError(
                f"models.{name}.model: {model_dir} is not a Hugging Face model directory"
                " (no config.json); the transformers engine serves local directories only"
            )
        return TransformersLaunch(resolve_transformers_python(model.python), model_dir)

    def launch_spec(self, name: str, model: TransformersModel, resolved: TransformersLaunch, port: int) -> LaunchSpec:
        model_dir = resolved.model_dir
        link = served_link(name, model_dir)
        urls = local_urls(port, metrics_path=None)
        # HF_HOME inside the run dir: /v1/models lists the hub cache and fails when there is none.
        env = {**OFFLINE_ENV, "HF_HOME": str(run_dir(name) / "hf-home"), **model.env}
        (run_dir(name) / "hf-home" / "hub").mkdir(parents=True, exist_ok=True)
        return LaunchSpec(
            argv=serve_argv(resolved.python, name, model, port),
            env=env,
            port=port,
            base_url=urls["base_url"],
            health_url=urls["health_url"],
            cwd=str(run_dir(name)),
            extra={"model_dir": str(model_dir), "link": str(link)},
        )
