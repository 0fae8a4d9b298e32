"""Progress display for long local work (assembling packaged models) on the terminal."""

from __future__ import annotations

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from gpufleet.config import Config, LlamaCppModel
from gpufleet.model_packages import PACKAGED_MODELS, PackagedModel, is_prepared, prepare


def prepare_with_progress(model: PackagedModel) -> str:
    """Assemble + verify one packaged model with a progress bar; returns the GGUF path."""
    if is_prepared(model):
        return str(prepare(model))
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn()
    ) as progress:
        task = progress.add_task(f"assembling {model.model_id}", total=model.size_bytes)
        path = prepare(model, lambda done, total: progress.update(task, completed=done))
    return str(path)


def prepare_packaged_models(config: Config) -> None:
    """Make sure every packaged model the config uses is assembled before engines start."""
    for model in config.models.values():
        if isinstance(model, LlamaCppModel) and model.source.startswith("package:"):
            packaged = PACKAGED_MODELS.get(model.source.removeprefix("package:"))
            if packaged is not None and packaged.is_split:
                prepare_with_progress(packaged)
