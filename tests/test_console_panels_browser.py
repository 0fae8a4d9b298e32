"""The console's newer panels in a real browser (Debian's Chromium via Playwright) against a real `gpufleet serve`:
answers rendered as markdown (safely), TTFT and tok/s per answer, code blocks' Copy buttons, the engine log view,
the host panel, the bench plot full size, the router-targets table at 1280 px, and tokens per day by model.

The chat model is a STAND-IN upstream (below) that streams a markdown answer with HTML in it; the engine whose
log is shown is the STAND-IN vLLM (tests/standin_vllm, not vLLM). This machine has no GPU: the host panel's GPU
rendering is fed the reading of the FAKE NVML library from test_console_admin.py.
Set GPUFLEET_CONSOLE_PANELS_SCREENSHOT=docs/img/console-panels.png and
GPUFLEET_CONSOLE_PLOT_SCREENSHOT=docs/img/console-plot.png to refresh the docs' screenshots.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, expect
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gpufleet.doctor.host_load import read_gpus
from gpufleet.limits import Limits
from gpufleet.paths import bench_latest_dir
from gpufleet.store import KeyRecord, new_secret, open_store
from tests.chromium_browser import chromium
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream
from tests.standin_vllm import standin_model
from tests.test_console_admin import HF_TOKEN, FakeNvml, secret_printing_python
from tests.test_console_browser import plot_png

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN = "console-panels-admin"
CODE = 'def greet(name):\n    return f"<b>{name}</b>"  # HTML in code stays text'
ANSWER = (
    "## Plan\n\nHere is **bold**, *italic*, `inline <code>` and a [link](https://example.org/docs).\n\n"
    "- first item\n- second item\n  - nested item\n\n"
    f"```python\n{CODE}\n```\n\n"
    "| model | tok/s |\n|---|---|\n| qwen | 42 |\n\n"
    '<img src=x onerror="window.pwned = 1"><script>window.pwned = 2</script> '
    "[click](javascript:window.pwned=3)\n"
)


class StandInMarkdownWriter(StandInUpstream):
    """A STAND-IN upstream (not a real engine) that streams ANSWER a few characters at a time, with short pauses
    as an engine decoding would, then the usage chunk that `stream_options.include_usage` asks for."""

    async def _chat(self, request: Request) -> Response:
        self.received.append(orjson.loads(await request.body()))
        return StreamingResponse(self._markdown_stream(), media_type="text/event-stream")

    async def _markdown_stream(self) -> AsyncIterator[bytes]:
        base = {"id": "chatcmpl-standin-md", "object": "chat.completion.chunk", "model": "standin"}
        pieces = [ANSWER[i : i + 7] for i in range(0, len(ANSWER), 7)]
        for n, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if n == 0 else {"content": piece}
            yield (
                b"data: "
                + orjson.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                + b"\n\n"
            )
            await asyncio.sleep(0.01)
        yield (
            b"data: "
            + orjson.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            + b"\n\n"
        )
        usage = {"prompt_tokens": 12, "completion_tokens": len(pieces), "total_tokens": 12 + len(pieces)}
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n" + b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedGateway, str]]:
    """`gpufleet serve` with the markdown stand-in, the STAND-IN vLLM (its log), a dead remote (a router
    target with a long last error), a team key, and a bench run with a plot wider than the page."""
    tmp = tmp_path_factory.mktemp("console-panels")
    writer = StandInMarkdownWriter().start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GPUFLEET_CACHE", str(tmp / "cache"))  # the served gateway inherits it
        bench = bench_latest_dir()
        bench.mkdir(parents=True)
        (bench / "report.json").write_text('{"targets": ["writer"]}')
        (bench / "latency.png").write_bytes(plot_png(1600, 640))
        db = f"sqlite:///{tmp}/store.sqlite3"
        team = new_secret()
        store = open_store(db)
        store.add_key(KeyRecord.create(name="team", secret=team, limits=Limits()))
        store.close()
        config = {
            "server": {"api_keys": [ADMIN], "database_url": db},
            "models": {
                "writer": {"engine": "remote", "url": writer.url},
                "engine": standin_model(
                    python=str(secret_printing_python(tmp)), preload=True, env={"HF_TOKEN": HF_TOKEN}
                ),
                "gone": {
                    "engine": "remote",
                    "url": "http://127.0.0.1:9/v1/a-long-path/to-make-the-error-long",
                    "timeout_s": 5,
                },
            },
        }
        gateway = start_gateway(config, tmp)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for model in ("engine", "gone"):  # ledger rows for two models; a failure for the targets table
        httpx.post(
            f"{gateway.url}/v1/chat/completions",
            headers=auth,
            timeout=60,
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
    yield gateway, team
    stop_gateway(gateway)
    writer.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, served: tuple[ServedGateway, str]) -> Iterator[Page]:
    """The console at 1280 px wide; fails the test on any script error or a CSP refusal."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served[0].url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console", lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None
    )
    page.goto(f"{served[0].url}/ui")
    yield page
    context.close()
    assert problems == [], f"the console's scripts threw or broke its CSP: {problems}"


def use_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def ask_writer(page: Page) -> None:
    use_key(page, ADMIN)
    page.select_option("#chat-model", "writer")
    page.fill("#chat-input", "Write a plan.")
    page.click("#chat-send")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done")


def test_answer_renders_as_markdown_and_model_html_stays_text(page: Page) -> None:
    ask_writer(page)
    content = page.locator(".msg.assistant").last.locator(".content")
    expect(content.locator("h2")).to_have_text("Plan")
    expect(content.locator("strong").first).to_have_text("bold")
    expect(content.locator("em").first).to_have_text("italic")
    expect(content.locator("p code").first).to_have_text("inline <code>")
    expect(content.locator(":scope > ul > li")).to_have_count(2)
    expect(content.locator("ul ul > li")).to_have_text("nested item")
    expect(content.locator("table td").first).to_have_text("qwen")
    link = content.locator("a")
    expect(link).to_have_count(1)  # the https link; the javascript: one stays text
    expect(link).to_have_attribute("href", "https://example.org/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    # The model's markup is shown, never run or loaded.
    expect(content.locator("img, script")).to_have_count(0)
    expect(content).to_contain_text('<img src=x onerror="window.pwned = 1"><script>window.pwned = 2</script>')
    expect(content).to_contain_text("[click](javascript:window.pwned=3)")
    assert page.evaluate("window.pwned") is None


def test_code_blocks_have_a_copy_button_that_copies_the_code(page: Page) -> None:
    ask_writer(page)
    block = page.locator(".msg.assistant").last.locator(".code-block")
    expect(block.locator(".lang")).to_have_text("python")
    expect(block.locator("code")).to_have_text(CODE)
    block.locator("button.copy-code").click()
    expect(block.locator("button.copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE


def test_each_answer_shows_its_ttft_and_tokens_per_second(page: Page) -> None:
    ask_writer(page)
    answer = page.locator(".msg.assistant").last
    footer = answer.locator("footer")
    expect(footer).to_contain_text("model writer")
    expect(footer.locator(".ttft")).to_have_text(re.compile(r"^TTFT \d+ ms$"))
    expect(footer.locator(".tok-s")).to_have_text(re.compile(r"^\d+\.\d tok/s$"))
    pieces = len(range(0, len(ANSWER), 7))
    expect(footer).to_contain_text(f"12 prompt + {pieces} completion tokens")
    assert int(answer.get_attribute("data-ttft-ms") or "-1") >= 0
    assert float(answer.get_attribute("data-tokens-per-s") or "0") > 0


@pytest.mark.parametrize(
    ("markdown", "html"),
    [
        (
            "```sh\necho hi",
            '<div class="code-block"><div class="code-head"><span class="lang">sh</span>'
            '<button type="button" class="quiet small copy-code">Copy</button></div>'
            '<pre><code data-lang="sh">echo hi</code></pre></div>',
        ),  # still streaming: unclosed
        ("1. one\n2. two", "<ol><li>one</li><li>two</li></ol>"),
        ("3. three\n4. four", '<ol start="3"><li>three</li><li>four</li></ol>'),
        ("line one\nline two", "<p>line one<br>line two</p>"),
        ("> quoted **text**", "<blockquote><p>quoted <strong>text</strong></p></blockquote>"),
        ("a \\*not italic\\* b", "<p>a *not italic* b</p>"),
        ("snake_case_name and _this_", "<p>snake_case_name and <em>this</em></p>"),
        ("~~gone~~ ---", "<p><del>gone</del> ---</p>"),
        ("---", "<hr>"),
        (
            "![x](https://host/i.png)",
            '<p><a href="https://host/i.png" target="_blank" rel="noopener noreferrer nofollow">x</a></p>',
        ),
        ("[x](data:text/html,hi)", "<p>[x](data:text/html,hi)</p>"),
        ("<b onclick=alert(1)>hi</b>", "<p>&lt;b onclick=alert(1)&gt;hi&lt;/b&gt;</p>"),
    ],
)
def test_markdown_renderer_cases(page: Page, markdown: str, html: str) -> None:
    rendered = page.evaluate(
        """async (text) => {
        const { renderMarkdown } = await import("/ui/static/markdown.js");
        const box = document.createElement("div");
        box.append(...renderMarkdown(text));
        return box.innerHTML;
    }""",
        markdown,
    )
    assert rendered == html


def test_engine_log_view_shows_the_engines_lines_with_credentials_masked(page: Page) -> None:
    use_key(page, ADMIN)
    page.locator('#models tr[data-model="engine"] button.log').click()
    view = page.locator("#engine-log")
    expect(view).to_be_visible()
    expect(view).to_have_attribute("data-model", "engine")
    text = view.locator("#engine-log-text")
    expect(text).to_contain_text("non-default args")  # the stand-in replays vLLM's real startup log
    page.select_option("#engine-log-lines", "200")  # back to the lines the wrapper printed first
    expect(text).to_contain_text("engine key: ***")
    expect(text).to_contain_text("hub token ***")
    assert HF_TOKEN not in text.inner_text()
    expect(view.locator("#engine-log-title")).to_contain_text("ready")
    view.locator("#engine-log-close").click()
    expect(view).to_be_hidden()
    expect(page.locator('#models tr[data-model="writer"] button.log')).to_have_count(0)  # remote: no engine


def test_host_panel_shows_cpu_and_ram_and_says_there_is_no_gpu_here(page: Page) -> None:
    use_key(page, ADMIN)
    host = page.locator("#host")
    expect(host.locator('tr[data-host="cpu"]')).to_contain_text(re.compile(r"\d+ % of \d+ cores · load"))
    expect(host.locator('tr[data-host="ram"]')).to_contain_text(re.compile(r"[\d.]+ / [\d.]+ GiB used"))
    expect(host.locator("#host-no-gpu")).to_contain_text("no GPU: NVML unavailable")


def test_host_panel_renders_each_gpu_of_an_nvml_reading(page: Page) -> None:
    use_key(page, ADMIN)
    gpus = read_gpus(FakeNvml())
    gpus[0]["processes"][0]["model"] = "qwen3-8b"  # as /admin/host tags a process of an engine's group
    gpus[0]["processes"][1]["model"] = None
    reading = {
        "cpu": {"percent": 12.5, "cores": 16, "load": [1, 0.5, 0.25], "over_s": 5},
        "memory": {"total_bytes": 128 << 30, "available_bytes": 100 << 30, "used_bytes": 28 << 30},
        "gpus": gpus,
        "nvml": "ok",
    }
    text = page.evaluate(
        """async (reading) => {
        const { HostPanel } = await import("/ui/static/host.js");
        const root = document.createElement("div");
        root.innerHTML = '<div id="host-body"></div>';
        new HostPanel(root).render(reading);
        return root.innerText;
    }""",
        reading,
    )
    assert "GPU 0 NVIDIA H100 80GB HBM3 · 87 % busy · 64 °C · 412 W" in text
    assert "60.0 / 79.6 GiB" in text
    assert "qwen3-8b 58.6 GiB" in text and "pid 4343" in text
    assert "GPU 1 NVIDIA GB10" in text and "not reported (unified memory?)" in text


def test_a_team_key_gets_no_host_panel_or_engine_log(page: Page, served: tuple[ServedGateway, str]) -> None:
    use_key(page, served[1])
    expect(page.locator("#host-body")).to_contain_text("needs an admin key")
    page.evaluate("""async () => {
        const { getJson } = await import("/ui/static/api.js");
        try { await getJson("/admin/models/engine/logs"); } catch (error) { window.logRefusal = String(error); }
    }""")
    assert page.evaluate("window.logRefusal").startswith("403: /admin endpoints need an admin key")


def test_bench_plot_opens_full_size(page: Page) -> None:
    use_key(page, ADMIN)
    plot = page.locator("#bench figure img")
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.naturalWidth") == 1600
    assert plot.evaluate("img => img.clientWidth") < 1600  # fitted to the panel
    plot.click()
    viewer = page.locator("#plot-viewer")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".caption")).to_have_text("latency.png")
    full = viewer.locator("img")
    assert full.evaluate("img => img.clientWidth") == 1600  # its own size, scrollable in the dialog
    shot = os.environ.get("GPUFLEET_CONSOLE_PLOT_SCREENSHOT")
    if shot:
        page.screenshot(path=shot)
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    plot.click()
    viewer.locator("button.close").click()
    expect(viewer).to_be_hidden()


def test_router_targets_table_fits_1280_px(page: Page) -> None:
    use_key(page, ADMIN)
    gone = page.locator('#targets tr[data-target="gone"]')
    expect(gone).to_contain_text("cannot connect to upstream")  # a long last error
    table_box = page.locator("#targets").evaluate(
        "t => ({table: t.getBoundingClientRect().right, box: t.parentElement.clientWidth, scroll: t.scrollWidth})"
    )
    assert table_box["scroll"] <= table_box["box"], table_box  # no horizontal scrolling inside its box
    assert table_box["table"] <= 1280
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # nor for the page


def test_usage_shows_tokens_per_day_by_model(page: Page) -> None:
    use_key(page, ADMIN)
    chart = page.locator("#usage-chart-models")
    expect(chart.locator('rect.bar[data-series="engine"]')).to_have_count(1)
    expect(chart.locator(".legend")).to_contain_text("engine")
    # "gone" answered no tokens (its engine was unreachable): no bar, no legend entry.
    expect(chart.locator('rect.bar[data-series="gone"]')).to_have_count(0)
    expect(chart.locator(".legend")).not_to_contain_text("gone")


def test_screenshot_of_the_console_with_markdown_log_and_host(page: Page, tmp_path: Path) -> None:
    ask_writer(page)
    page.locator('#models tr[data-model="engine"] button.log').click()
    expect(page.locator("#engine-log-text")).to_contain_text("non-default args")
    expect(page.locator('#host tr[data-host="cpu"]')).to_contain_text("cores")
    shot = Path(os.environ.get("GPUFLEET_CONSOLE_PANELS_SCREENSHOT") or tmp_path / "panels.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")
