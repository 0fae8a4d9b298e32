"""Where `gpufleet bench` may write its report and plot: never over a file it did not write (issue 20).

`--plot /etc/something` once replaced a system file with a PNG. A path is refused, before the benchmark
runs, when it is a directory, or an existing file (or link) that is not a plot or report gpufleet wrote,
unless `--force`. gpufleet's plots carry a PNG text chunk `Software: gpufleet bench`; its reports have the
report's own top-level keys.

    check_output(Path("bench.png"), "--plot", kind="png", force=False)   # ConfigError when refused
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from gpufleet.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_SOFTWARE = "gpufleet bench"  # the PNG `Software` text chunk of every plot gpufleet draws
_REPORT_KEYS = {"version", "created_at", "settings", "targets", "runs"}
_SNIFF_BYTES = 64 * 1024


def check_output(path: Path, option: str, *, kind: Literal["png", "json"], force: bool) -> None:
    """ConfigError (one line, naming the option) when `path` may not be written."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name, e.g. {path / f'bench.{kind}'}")
    if not path.exists() and not path.is_symlink():
        return
    if force:
        return
    if path.is_symlink():
        raise ConfigError(f"{option} {path}: is a symbolic link; refusing to write through it (use --force)")
    if not (is_gpufleet_plot(path) if kind == "png" else is_gpufleet_report(path)):
        raise ConfigError(
            f"{option} {path}: exists and is not a {kind.upper()} that gpufleet bench wrote; "
            "refusing to overwrite it (choose another name, or use --force)"
        )


def is_gpufleet_plot(path: Path) -> bool:
    """Whether `path` is a PNG with gpufleet's `Software` text chunk."""
    try:
        with path.open("rb") as file:
            head = file.read(_SNIFF_BYTES)
    except OSError:
        return False
    return head.startswith(PNG_SIGNATURE) and b"tEXtSoftware\x00" + PLOT_SOFTWARE.encode() in head


def is_gpufleet_report(path: Path) -> bool:
    """Whether `path` is a JSON bench report (the report's top-level keys)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and set(data) >= _REPORT_KEYS
