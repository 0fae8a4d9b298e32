"""PNG plots of a benchmark report: output throughput vs concurrency, and TTFT / inter-token latency CDFs.

    plot_report(report_dict, Path("bench.png"))   # PLOT_SIZE_PX pixels, drawn from the JSON report alone

matplotlib (the `bench` extra) is imported here only, with the Agg backend: no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpufleet.bench.outputs import PLOT_SOFTWARE
from gpufleet.bench.stats import cdf_points
from gpufleet.errors import ConfigError

PLOT_DPI = 100
PLOT_SIZE_IN = (15.0, 4.5)
PLOT_SIZE_PX = (int(PLOT_SIZE_IN[0] * PLOT_DPI), int(PLOT_SIZE_IN[1] * PLOT_DPI))


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'gpufleet[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _runs_by_target(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {target["label"]: [] for target in report["targets"]}
    for run in report["runs"]:
        runs.setdefault(run["target"], []).append(run)
    return {label: sorted(items, key=lambda r: r["concurrency"]) for label, items in runs.items() if items}


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Draw the three panels into `path` (PNG) and return it."""
    plt = _pyplot()
    fig, (throughput, ttft, itl) = plt.subplots(1, 3, figsize=PLOT_SIZE_IN, dpi=PLOT_DPI)
    try:
        top = max((run["concurrency"] for run in report["runs"]), default=1)
        for label, runs in _runs_by_target(report).items():
            levels = [run["concurrency"] for run in runs]
            throughput.plot(levels, [run["output_tok_per_s"] for run in runs], marker="o", label=label)
            # The CDFs compare targets under the heaviest load measured.
            last = runs[-1]
            for axis, key in ((ttft, "ttft_s"), (itl, "itl_s")):
                values = [v * 1000 for v in last["samples"][key] if v is not None]
                if values:
                    xs, ys = cdf_points(values)
                    axis.step(xs, ys, where="post", label=f"{label} (c={last['concurrency']})")
        throughput.set(title="Output throughput", xlabel="concurrency (requests in flight)", ylabel="tokens/s")
        throughput.set_xscale("log", base=2)
        throughput.set_xticks(sorted({run["concurrency"] for run in report["runs"]}) or [1])
        throughput.get_xaxis().set_major_formatter("{x:g}")
        ttft.set(title=f"Time to first token (CDF, top concurrency {top})", xlabel="ms", ylabel="fraction")
        itl.set(title="Inter-token latency (CDF)", xlabel="ms", ylabel="fraction")
        for axis in (throughput, ttft, itl):
            axis.grid(True, alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize="small")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        # The mark that lets a later --plot overwrite this file (bench/outputs.py), and nothing else.
        fig.savefig(path, format="png", dpi=PLOT_DPI, metadata={"Software": PLOT_SOFTWARE})
    finally:
        plt.close(fig)
    return path
