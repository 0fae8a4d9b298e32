"""The web console's routes through the ASGI app in-process: the page and its files, and the bench report.

The page itself in a real browser (against a real gateway and engine) is tested in test_console_browser.py.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from gpufleet.config import parse_config
from gpufleet.gateway import build_app, running
from gpufleet.gateway.ui import STATIC_DIR, is_plot_name
from gpufleet.paths import bench_latest_dir

KEY = "console-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (47, 91, 211)) -> bytes:
    """A real (decodable) PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("GPUFLEET_CACHE", str(tmp_path / "cache"))
    config = parse_config(
        {
            "server": {"api_keys": [KEY]},
            # Nothing to start: the console's routes need no engine.
            "models": {"far": {"engine": "remote", "url": "http://127.0.0.1:9/v1"}},
        }
    )
    app = build_app(config)
    transport = httpx.ASGITransport(app=app)
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http


def write_bench_run(report: bytes = b'{"targets": ["smollm2"], "results": []}') -> Path:
    directory = bench_latest_dir()
    directory.mkdir(parents=True)
    (directory / "report.json").write_bytes(report)
    (directory / "throughput.png").write_bytes(png_bytes(4, 3))
    (directory / "notes.txt").write_text("not a plot")
    return directory


@pytest.mark.parametrize("path", ["/ui", "/ui/"])
async def test_console_page_loads_without_a_key(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>gpufleet console</title>" in response.text


async def test_every_file_the_page_loads_is_served_from_the_package(client: httpx.AsyncClient) -> None:
    page = (await client.get("/ui")).text
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page)
    modules = re.findall(r'from "\./([\w-]+\.js)"', "".join(p.read_text() for p in STATIC_DIR.glob("*.js")))
    assert "/ui/static/main.js" in assets and "/ui/static/console.css" in assets
    for url in [*assets, *(f"/ui/static/{name}" for name in modules)]:
        response = await client.get(url)
        assert response.status_code == 200, url
    js = await client.get("/ui/static/main.js")
    assert "javascript" in js.headers["content-type"]  # browsers refuse a module of any other type


def test_the_console_loads_nothing_from_another_origin() -> None:
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", path.read_text()), f"{path.name} refers to another origin"


async def test_missing_static_file_is_an_openai_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/ui/static/nope.js")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_bench_report_needs_the_api_key(client: httpx.AsyncClient) -> None:
    write_bench_run()
    for path in ("/ui/bench/latest", "/ui/bench/latest/throughput.png"):
        response = await client.get(path, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "invalid API key"


async def test_no_bench_run_yet_says_how_to_make_one(client: httpx.AsyncClient) -> None:
    body = (await client.get("/ui/bench/latest", headers=AUTH)).json()
    assert body["report"] is None and body["plots"] == []
    assert "no bench run yet" in body["hint"] and "gpufleet bench" in body["hint"]


async def test_latest_bench_run_lists_its_report_and_plots(client: httpx.AsyncClient) -> None:
    write_bench_run()
    response = await client.get("/ui/bench/latest", headers=AUTH)
    assert response.headers["cache-control"] == "no-store"  # the next run replaces the files in place
    body = response.json()
    assert body["report"] == {"targets": ["smollm2"], "results": []}
    assert body["plots"] == ["throughput.png"]
    plot = await client.get("/ui/bench/latest/throughput.png", headers=AUTH)
    assert plot.status_code == 200
    assert plot.headers["content-type"] == "image/png"
    assert plot.content == (bench_latest_dir() / "throughput.png").read_bytes()


async def test_a_report_that_is_not_json_is_shown_as_an_error(client: httpx.AsyncClient) -> None:
    write_bench_run(report=b"{truncated")
    body = (await client.get("/ui/bench/latest", headers=AUTH)).json()
    assert body["report"] is None
    assert "report.json: not valid JSON" in body["error"]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("throughput.png", True),
        ("latency-cdf_c16.png", True),
        ("report.json", False),
        ("notes.txt", False),
        (".hidden.png", False),
        ("..png", False),
        ("a..b.png", False),
        ("../secret.png", False),
        ("sub/plot.png", False),
        ("plot.png/", False),
        ("plot.PNG", False),
        ("", False),
        ("x" * 200 + ".png", False),
    ],
)
def test_plot_names_are_bare_png_file_names(name: str, ok: bool) -> None:
    assert is_plot_name(name) is ok


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/ui/bench/latest/notes.txt", 400),  # exists, but is no plot
        ("/ui/bench/latest/report.json", 400),
        ("/ui/bench/latest/..%2Freport.png", 404),  # a separator never reaches the handler
        ("/ui/bench/latest/missing.png", 404),
    ],
)
async def test_bench_files_other_than_its_plots_are_refused(client: httpx.AsyncClient, path: str, status: int) -> None:
    write_bench_run()
    response = await client.get(path, headers=AUTH)
    assert response.status_code == status, response.text
    assert set(orjson.loads(response.content)["error"]) >= {"message", "code"}


async def test_a_link_out_of_the_bench_folder_is_not_followed(client: httpx.AsyncClient, tmp_path: Path) -> None:
    directory = write_bench_run()
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(png_bytes(1, 1))
    (directory / "linked.png").symlink_to(outside)
    response = await client.get("/ui/bench/latest/linked.png", headers=AUTH)
    assert response.status_code == 404
    assert (await client.get("/ui/bench/latest", headers=AUTH)).json()["plots"] == ["throughput.png"]
