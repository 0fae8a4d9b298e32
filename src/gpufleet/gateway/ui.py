"""The web console at /ui: a few static files (HTML, CSS, vanilla JS modules) and the latest bench report.

The page itself loads without a key and shows nothing by itself: everything it displays comes from the
key-checked JSON endpoints (/status, /v1/models, /admin/models/..., /ui/bench/latest), which the page calls
with the key the user typed. No CDN and no build step: the files under static/ are what the browser runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gpufleet.errors import GpufleetError, RequestError
from gpufleet.gateway.auth import presented_key
from gpufleet.gateway.errors import error_response
from gpufleet.gateway.state import Gateway, state_of
from gpufleet.paths import bench_latest_dir

STATIC_DIR = Path(__file__).parent / "static"
BENCH_HINT = "no bench run yet — run `gpufleet bench MODEL ...`; its report and plots appear here"
# A plot is a plain file name in the report folder: no separators, no leading dot, so never a path.
_PLOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.png")
# The browser must ask again every time: the latest run replaces these files in place.
_NO_STORE = {"Cache-Control": "no-store"}


def is_plot_name(name: str) -> bool:
    """Whether `name` may name a plot in the bench folder (a bare `*.png` file name, nothing path-like)."""
    return _PLOT_NAME.fullmatch(name) is not None and ".." not in name


def plot_file(directory: Path, name: str) -> Path | None:
    """The plot `name` in `directory`; None unless it is a bare *.png name of a file there (not led elsewhere)."""
    if not is_plot_name(name):
        return None
    path = directory / name
    # A link in the folder must not lead out of it.
    if not path.is_file() or path.resolve().parent != directory.resolve():
        return None
    return path


def bench_summary(directory: Path) -> dict[str, Any]:
    """What the console shows of the latest bench run in `directory`: its report, its plots, when it was written.

    `report` is None when no run has written one yet (`hint` says how to make one); a report.json that is
    not JSON is shown as an error rather than hidden.
    """
    report_path = directory / "report.json"
    plots = sorted(p.name for p in directory.glob("*.png") if plot_file(directory, p.name))  # none if no folder
    if not report_path.is_file():
        return {"report": None, "plots": plots, "hint": BENCH_HINT}
    summary: dict[str, Any] = {"report": None, "plots": plots, "modified": report_path.stat().st_mtime}
    try:
        summary["report"] = orjson.loads(report_path.read_bytes())
    except orjson.JSONDecodeError as err:
        summary["error"] = f"{report_path}: not valid JSON ({err})"
    return summary


def _gateway(request: Request) -> Gateway:
    return state_of(request)


async def index(request: Request) -> Response:
    """The console page (at /ui and /ui/)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


async def bench_latest(request: Request) -> Response:
    """The latest bench report as JSON: {report, plots, modified} or {report: null, hint}."""
    try:
        _gateway(request).keys.check(presented_key(request.headers))
    except GpufleetError as err:
        return error_response(err)
    body = bench_summary(bench_latest_dir())
    return Response(orjson.dumps(body), media_type="application/json", headers=_NO_STORE)


async def bench_plot(request: Request) -> Response:
    """One PNG of the latest bench run, by file name (validated; never a path)."""
    name = request.path_params["name"]
    try:
        _gateway(request).keys.check(presented_key(request.headers))
        if not is_plot_name(name):
            raise RequestError(
                f"bad bench plot name {name!r}: plot names are bare *.png file names",
                param="name",
                code="invalid_plot_name",
            )
        path = plot_file(bench_latest_dir(), name)
        if path is None:
            raise RequestError(
                f"no bench plot {name!r} in the latest bench run; see /ui/bench/latest",
                status_code=404,
                code="not_found",
            )
    except GpufleetError as err:
        return error_response(err)
    return FileResponse(path, media_type="image/png", headers=_NO_STORE)


def routes() -> list[BaseRoute]:
    """The console's routes, to add to the gateway's."""
    return [
        Route("/ui", index, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        Route("/ui/bench/latest", bench_latest, methods=["GET"]),
        Route("/ui/bench/latest/{name}", bench_plot, methods=["GET"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC_DIR), name="ui-static"),
    ]
