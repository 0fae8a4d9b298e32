"""Keep the latest benchmark where the web console finds it: <cache>/bench/latest/{report.json,bench.png}.

The directory is replaced as a whole (written beside it, then renamed), so a reader never sees a report
with the previous run's plot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gpufleet.bench.plot import plot_report
from gpufleet.paths import bench_latest_dir

REPORT_NAME = "report.json"
PLOT_NAME = "bench.png"


def write_latest(report: dict[str, Any], *, plot: bool = True, directory: Path | None = None) -> Path:
    """Write `report` (and its plot) as the latest benchmark; returns the directory."""
    final = directory or bench_latest_dir()
    staging = final.with_name(final.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / REPORT_NAME).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if plot:
        plot_report(report, staging / PLOT_NAME)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
