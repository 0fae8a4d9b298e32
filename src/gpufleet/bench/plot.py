"""PNG plots of a benchmark report, drawn from the JSON report alone.

    plot_report(report_dict, Path("bench.png"))    # plot_size_px(report_dict) pixels

Closed loop (a row when the report has concurrency runs): output throughput vs concurrency, and TTFT and
inter-token-latency CDFs at the top concurrency. Open loop (a row when it has rate runs): achieved vs offered
request rate, TTFT and end-to-end latency (p50 solid, p95 dotted) vs rate. Latency axes are logarithmic (a
cold start or a queue stretches them over decades). A gateway target and its engine-direct twin share a hue
(dark through the gateway, light and dashed direct); one legend under the panels serves them all and wraps
to at most two rows, so six series stay readable.

matplotlib (the `bench` extra) is imported here only, with the Agg backend: no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gpufleet.bench.outputs import PLOT_SOFTWARE
from gpufleet.bench.report import level_of
from gpufleet.bench.stats import cdf_points
from gpufleet.errors import ConfigError

PLOT_DPI = 100
PLOT_WIDTH_IN = 15.0
ROW_HEIGHT_IN = 4.3
LEGEND_HEIGHT_IN = 1.1  # room for two legend rows
PLOT_SIZE_IN = (PLOT_WIDTH_IN, ROW_HEIGHT_IN + LEGEND_HEIGHT_IN)  # one row: a closed- or an open-loop sweep
PLOT_SIZE_PX = (int(PLOT_SIZE_IN[0] * PLOT_DPI), int(PLOT_SIZE_IN[1] * PLOT_DPI))
LEGEND_MIN_COLUMNS = 3
PAIRED_COLORMAP = "tab20"  # colours 2k (dark) and 2k+1 (light) are one hue: 10 pairs


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'gpufleet[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rows(report: dict[str, Any]) -> list[str]:
    modes = {run.get("mode", "closed") for run in report["runs"]}
    return [mode for mode in ("closed", "open") if mode in modes] or ["closed"]


def plot_size_px(report: dict[str, Any]) -> tuple[int, int]:
    """The PNG's size in pixels: one row per kind of sweep in the report."""
    rows = len(_rows(report))
    return int(PLOT_WIDTH_IN * PLOT_DPI), int((rows * ROW_HEIGHT_IN + LEGEND_HEIGHT_IN) * PLOT_DPI)


def series_styles(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Colour and line style per target label: a gateway target and its direct twin are one hue (dark/light).

    >>> styles = series_styles([{"label": "a", "direct_of": None}, {"label": "a (direct)", "direct_of": "a"}])
    >>> styles["a"]["color"] != styles["a (direct)"]["color"], styles["a (direct)"]["linestyle"]
    (True, '--')
    """
    import matplotlib

    colormap = matplotlib.colormaps[PAIRED_COLORMAP]
    palette = [colormap(index) for index in range(colormap.N)]
    pairs = len(palette) // 2
    hue: dict[str, int] = {}
    for target in targets:
        if not target.get("direct_of"):
            hue[target["label"]] = len(hue) % pairs
    styles: dict[str, dict[str, Any]] = {}
    for target in targets:
        twin_of = target.get("direct_of")
        if twin_of and twin_of in hue:
            styles[target["label"]] = {"color": palette[2 * hue[twin_of] + 1], "linestyle": "--"}
        else:
            index = hue.setdefault(target["label"], len(hue) % pairs)
            styles[target["label"]] = {"color": palette[2 * index], "linestyle": "-"}
    return styles


def _legend_order(targets: list[dict[str, Any]]) -> Any:
    """Sort key for legend labels: each gateway target, then its direct twin, in the report's order."""
    position = {target["label"]: index for index, target in enumerate(targets)}

    def key(label: str) -> tuple[int, int]:
        twin_of = next((t.get("direct_of") for t in targets if t["label"] == label), None)
        anchor = twin_of if twin_of in position else label
        return position.get(anchor, len(position)), 1 if anchor != label else 0

    return key


def _runs_by_target(report: dict[str, Any], mode: str) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {target["label"]: [] for target in report["targets"]}
    for run in report["runs"]:
        if run.get("mode", "closed") == mode:
            runs.setdefault(run["target"], []).append(run)
    return {label: sorted(items, key=level_of) for label, items in runs.items() if items}


def _log_ms(axis: Any) -> None:
    axis.set_xscale("log")
    axis.get_xaxis().set_major_formatter("{x:g}")


def _closed_row(axes: Any, report: dict[str, Any], styles: dict[str, dict[str, Any]]) -> None:
    throughput, ttft, itl = axes
    by_target = _runs_by_target(report, "closed")
    levels = sorted({run["concurrency"] for runs in by_target.values() for run in runs}) or [1]
    for label, runs in by_target.items():
        style = styles.get(label, {})
        throughput.plot(
            [run["concurrency"] for run in runs],
            [run["output_tok_per_s"] for run in runs],
            marker="o",
            label=label,
            **style,
        )
        last = runs[-1]  # the CDFs compare targets under the heaviest load measured
        for axis, key in ((ttft, "ttft_s"), (itl, "itl_s")):
            values = [v * 1000 for v in last["samples"][key] if v is not None and v > 0]
            if values:
                xs, ys = cdf_points(values)
                axis.step(xs, ys, where="post", label=label, **style)
    throughput.set(
        title="Output throughput (closed loop)", xlabel="concurrency (requests in flight)", ylabel="tokens/s"
    )
    throughput.set_xscale("log", base=2)
    throughput.set_xticks(levels)
    throughput.get_xaxis().set_major_formatter("{x:g}")
    ttft.set(title=f"Time to first token, CDF at concurrency {levels[-1]}", xlabel="ms (log)", ylabel="fraction")
    itl.set(title=f"Inter-token latency, CDF at concurrency {levels[-1]}", xlabel="ms (log)", ylabel="fraction")
    for axis in (ttft, itl):
        _log_ms(axis)


def _open_row(axes: Any, report: dict[str, Any], styles: dict[str, dict[str, Any]]) -> None:
    achieved, ttft, latency = axes
    by_target = _runs_by_target(report, "open")
    rates = sorted({run["rate"] for runs in by_target.values() for run in runs}) or [1.0]
    achieved.plot(rates, rates, color="0.6", linestyle=":", linewidth=1, label="_offered")  # the ideal
    for label, runs in by_target.items():
        style = styles.get(label, {})
        offered = [run["rate"] for run in runs]
        achieved.plot(offered, [run["req_per_s"] for run in runs], marker="o", label=label, **style)
        for axis, key in ((ttft, "ttft_s"), (latency, "latency_s")):
            for pct, width, marker in (("p50", 1.8, "o"), ("p95", 1.0, "^")):
                points = [(run["rate"], run[key][pct] * 1000) for run in runs if run[key][pct]]
                if points:
                    dotted = {**style, "linestyle": ":"} if pct == "p95" else style
                    axis.plot(
                        *zip(*points, strict=True),
                        marker=marker,
                        linewidth=width,
                        label=label if pct == "p50" else f"_{label} p95",
                        **dotted,
                    )
    achieved.set(
        title="Achieved vs offered rate (open loop, Poisson)",
        xlabel="offered requests/s",
        ylabel="completed requests/s",
    )
    ttft.set(
        title="Time to first token vs rate (p50 solid, p95 dotted)", xlabel="offered requests/s", ylabel="ms (log)"
    )
    latency.set(
        title="End-to-end latency vs rate (p50 solid, p95 dotted)", xlabel="offered requests/s", ylabel="ms (log)"
    )
    for axis in (ttft, latency):
        axis.set_yscale("log")
        axis.get_yaxis().set_major_formatter("{x:g}")
    for axis in axes:
        axis.set_xticks(rates)
        axis.get_xaxis().set_major_formatter("{x:g}")


def plot_report(report: dict[str, Any], path: Path) -> Path:
    """Draw the panels into `path` (PNG) and return it."""
    plt = _pyplot()
    rows = _rows(report)
    width_px, height_px = plot_size_px(report)
    fig, grid = plt.subplots(
        len(rows),
        3,
        figsize=(width_px / PLOT_DPI, height_px / PLOT_DPI),
        dpi=PLOT_DPI,
        squeeze=False,
        layout="constrained",
    )
    try:
        styles = series_styles(report["targets"])
        for axes, mode in zip(grid, rows, strict=True):
            (_closed_row if mode == "closed" else _open_row)(axes, report, styles)
            for axis in axes:
                axis.grid(True, which="both", alpha=0.25)
        # One legend for every panel (the series are the same targets): labels from the first panel that has each.
        handles: dict[str, Any] = {}
        for axis in grid.flat:
            for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        if handles:
            # Two rows filled column by column: a gateway target sits right above its direct twin.
            labels = sorted(handles, key=_legend_order(report["targets"]))
            columns = max(LEGEND_MIN_COLUMNS, math.ceil(len(labels) / 2))
            fig.legend(
                [handles[label] for label in labels],
                labels,
                loc="outside lower center",
                ncols=columns,
                fontsize="medium",
                frameon=False,
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # The mark that lets a later --plot overwrite this file (bench/outputs.py), and nothing else.
        fig.savefig(path, format="png", dpi=PLOT_DPI, metadata={"Software": PLOT_SOFTWARE})
    finally:
        plt.close(fig)
    return path
