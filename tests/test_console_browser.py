"""The web console in a real browser: Debian's Chromium, driven by Playwright, against a real `gpufleet serve`.

The gateway runs the real embedded SmolLM2 engine behind an API key. Reasoning and tool-call rendering is
checked against a STAND-IN upstream (below) because SmolLM2 emits neither; everything else talks to the
real engine. Set GPUFLEET_CONSOLE_SCREENSHOT=docs/img/console.png to refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from playwright.sync_api import Browser, Page, expect
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gpufleet.paths import bench_latest_dir
from tests.chromium_browser import chromium
from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream

pytestmark = [pytest.mark.slow, pytest.mark.browser]

KEY = "console-test-key"
ENGINE_WAIT_MS = 180_000  # a start or an answer on the shared 2-core machine; never a timing assertion


class StandInToolCaller(StandInUpstream):
    """A STAND-IN upstream (not a real engine) that streams reasoning, then a tool call, as vLLM does with its
    reasoning and tool-call parsers on."""

    async def _chat(self, request: Request) -> Response:
        self.received.append(orjson.loads(await request.body()))
        return StreamingResponse(self._tool_call_stream(), media_type="text/event-stream")

    async def _tool_call_stream(self) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": "standin"}
        deltas: list[dict[str, object]] = [
            {"role": "assistant", "reasoning_content": "The user wants the weather; "},
            {"reasoning_content": "call the tool for Paris."},
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        ]
        for delta in deltas:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        yield b"data: " + orjson.dumps(last) + b"\n\n" + b"data: [DONE]\n\n"


def plot_png(width: int = 360, height: int = 180) -> bytes:
    """A real PNG that looks a little like a bar chart (the bench command writes the real plots)."""
    bars = [0.35, 0.6, 0.8, 0.9]
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(width):
            bar = x * len(bars) // width
            inside = x % (width // len(bars)) > 14 and y > height * (1 - bars[bar]) and y < height - 6
            row += bytes((47, 91, 211) if inside else (250, 251, 252))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInToolCaller]:
    server = StandInToolCaller().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp GPUFLEET_CACHE (the served gateway inherits it) holding a bench run's report and plot."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GPUFLEET_CACHE", str(tmp_path_factory.mktemp("console-cache")))
        bench = bench_latest_dir()
        bench.mkdir(parents=True)
        (bench / "report.json").write_text('{"targets": ["smollm2"], "concurrency": [1, 4]}')
        (bench / "throughput.png").write_bytes(plot_png())
        yield bench


@pytest.fixture(scope="module")
def console_gateway(
    tmp_path_factory: pytest.TempPathFactory, bench_dir: Path, standin: StandInToolCaller
) -> Iterator[ServedGateway]:
    """A real gateway with SmolLM2 behind an API key, and the stand-in as a remote model."""
    config = {
        "models": {
            # Two engines taking turns on one (pretend) GPU, for the swap buttons.
            "smollm2": smollm2_model(aliases=["tiny"], parallel=2, context=2048, swap_group="gpu0"),
            "smollm2-b": smollm2_model(preload=False, parallel=2, context=2048, swap_group="gpu0"),
            "standin-tools": {"engine": "remote", "url": standin.url},
        },
        "swap_groups": {"gpu0": {}},
        "server": {"api_keys": [KEY], "queue_timeout_s": 120},
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("console"))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, console_gateway: ServedGateway) -> Iterator[Page]:
    """A fresh browser context (its own localStorage) on the console; fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{console_gateway.url}/ui")
    yield page
    context.close()
    assert script_errors == [], f"the console's scripts threw: {script_errors}"


def use_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def test_console_asks_for_the_key_and_shows_a_wrong_one_as_401(page: Page) -> None:
    banner = page.locator("#banner")
    expect(banner).to_contain_text("401: missing API key")
    use_key(page, "wrong-key")
    expect(banner).to_contain_text("401: invalid API key")
    expect(banner).to_contain_text("Check the key")
    expect(page.locator("#models tbody tr")).to_have_count(0)  # nothing shown without a valid key
    expect(page.locator("#chat-model")).to_contain_text("enter the API key")
    use_key(page, KEY)
    expect(banner).to_be_hidden()
    expect(page.locator('#models tr[data-model="smollm2"] td.state')).to_have_text("ready")


def test_console_reads_server_sent_events_split_at_every_byte(page: Page) -> None:
    stream = 'data: {"a": "é"}\r\n\r\n: keep-alive\n\ndata: {"b":\ndata: 2}\n\ndata: [DONE]\n\ndata: "after"\n\n'
    payloads = page.evaluate(
        """async (text) => {
        const { sseData } = await import("/ui/static/api.js");
        const bytes = new TextEncoder().encode(text);
        const body = new ReadableStream({
            start(controller) {
                for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
                controller.close();
            },
        });
        const seen = [];
        for await (const data of sseData(new Response(body))) seen.push(data);
        return seen;
    }""",
        stream,
    )
    assert payloads == ['{"a": "é"}', '{"b":\n2}']  # comments skipped, multi-line data joined, nothing after [DONE]


def test_console_keeps_the_key_in_the_browser(page: Page) -> None:
    use_key(page, KEY)
    expect(page.locator('#models tr[data-model="smollm2"]')).to_be_visible()
    page.reload()
    expect(page.locator("#api-key")).to_have_value(KEY)
    expect(page.locator('#models tr[data-model="smollm2"] td.state')).to_have_text("ready")
    page.click("#forget-key")
    expect(page.locator("#banner")).to_contain_text("401: missing API key")
    assert page.evaluate("localStorage.getItem('gpufleet.apiKey')") is None


def test_console_shows_the_latest_bench_plots_or_how_to_make_one(page: Page, bench_dir: Path) -> None:
    use_key(page, KEY)
    plot = page.locator("#bench figure img")
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.naturalWidth") == 360  # the PNG decoded, not a broken-image icon
    expect(page.locator("#bench figcaption")).to_have_text("throughput.png")
    expect(page.locator("#bench details.report pre")).to_contain_text('"concurrency"', use_inner_text=False)

    moved = bench_dir.with_name("moved-away")
    bench_dir.rename(moved)
    try:
        page.click("#bench-reload")
        expect(page.locator("#bench-empty")).to_contain_text("no bench run yet — run gpufleet bench")
        expect(page.locator("#bench-empty code")).to_contain_text("gpufleet bench")
    finally:
        moved.rename(bench_dir)


def test_console_renders_streamed_reasoning_and_tool_calls(page: Page, standin: StandInToolCaller) -> None:
    use_key(page, KEY)
    page.select_option("#chat-model", "standin-tools")
    page.click("#chat .options summary")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    page.fill("#chat-tools", orjson.dumps(tools).decode())
    page.fill("#chat-input", "Weather in Paris?")
    page.click("#chat-send")

    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-state", "done")
    reasoning = answer.locator("details.reasoning")
    expect(reasoning).to_be_visible()
    expect(reasoning.locator(".reasoning-text")).to_be_hidden()  # collapsed until asked for
    reasoning.locator("summary").click()
    expect(reasoning.locator(".reasoning-text")).to_have_text("The user wants the weather; call the tool for Paris.")
    expect(answer.locator(".tool-call code")).to_have_text("get_weather")
    expect(answer.locator(".tool-call pre")).to_have_text('{\n  "city": "Paris"\n}')
    expect(answer.locator("footer")).to_contain_text("finish: tool_calls")
    assert standin.received[-1]["tools"] == tools
    assert standin.received[-1]["stream"] is True


def test_console_chats_with_the_real_engine_then_stops_and_starts_it(page: Page, tmp_path: Path) -> None:
    use_key(page, KEY)
    state = page.locator('#models tr[data-model="smollm2"] td.state')
    expect(state).to_have_text("ready")
    expect(page.locator('#models tr[data-model="standin-tools"] td.state')).to_have_text("remote")
    expect(page.locator('#targets tr[data-target="smollm2"]')).to_contain_text("healthy")

    page.select_option("#chat-model", "smollm2")
    page.click("#chat .options summary")
    page.fill("#chat-temperature", "0")
    page.fill("#chat-seed", "7")
    page.fill("#chat-max-tokens", "32")
    page.fill("#chat-input", "Name three colors.")
    page.click("#chat-send")
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-state", "done", timeout=ENGINE_WAIT_MS)
    assert answer.locator(".content").inner_text().strip()
    expect(answer.locator("footer")).to_contain_text("model smollm2")
    expect(answer.locator("footer")).to_contain_text("completion tokens")
    # Speed as this browser saw it, from the real engine's stream.
    expect(answer.locator("footer .ttft")).to_have_text(re.compile(r"^TTFT \d+ ms$"))
    expect(answer.locator("footer .tok-s")).to_have_text(re.compile(r"^\d+\.\d tok/s$"))
    # The fleet panel refreshes live: the finished request leaves the in-flight count.
    expect(page.locator('#models tr[data-model="smollm2"] td.inFlight')).to_have_text("0")
    page.click("#chat .options summary")  # fold the options again for a tidy screenshot
    expect(page.locator("#bench figure img")).to_be_visible()

    screenshot = Path(os.environ.get("GPUFLEET_CONSOLE_SCREENSHOT") or tmp_path / "console.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    page.click('#models tr[data-model="smollm2"] button.stop')
    expect(state).to_have_text("stopped", timeout=ENGINE_WAIT_MS)
    start = page.locator('#models tr[data-model="smollm2"] button.start')
    expect(start).to_be_enabled()
    start.click()
    expect(state).to_have_text("ready", timeout=ENGINE_WAIT_MS)
    expect(page.locator('#models tr[data-model="smollm2"] button.stop')).to_be_enabled()


def test_console_swaps_the_models_of_a_swap_group(page: Page) -> None:
    use_key(page, KEY)
    first = page.locator('#models tr[data-model="smollm2"]')
    second = page.locator('#models tr[data-model="smollm2-b"]')
    expect(first.locator("td.state")).to_have_text("ready", timeout=ENGINE_WAIT_MS)
    expect(second.locator("td.state")).to_have_text("stopped")
    expect(first.locator("button.swap")).to_be_disabled()  # already the one up

    second.locator("button.swap").click()
    expect(second.locator("td.state")).to_have_text("ready", timeout=ENGINE_WAIT_MS)
    expect(first.locator("td.state")).to_have_text("stopped")
    group = page.locator("#swap-groups tbody tr").first
    expect(group).to_contain_text("gpu0")
    expect(group).to_contain_text("smollm2-b")
    expect(group).to_contain_text("smollm2 (stopped)")

    first.locator("button.swap").click()
    expect(first.locator("td.state")).to_have_text("ready", timeout=ENGINE_WAIT_MS)
    expect(second.locator("td.state")).to_have_text("stopped")
