"""Cross-site writes from a real browser (issue 20 §3): Debian's Chromium, driven by Playwright.

A page on a second origin (a plain HTTP server on another port: the "attacker") tries what any web page can
do against a keyless gateway on 127.0.0.1: a `no-cors` POST that stops an engine and a `text/plain` chat POST
(CORS "simple" requests: no preflight). The gateway runs the real embedded SmolLM2 engine; the chat goes to
a STAND-IN upstream (standin_upstream.py) so that an answered chat is visible as a request it received.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser

from tests.chromium_browser import chromium
from tests.real_engines import smollm2_model
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ATTACK = """async (gateway) => {
    const chat = JSON.stringify({model: "standin", messages: [{role: "user", content: "hi"}]});
    const tries = [
        fetch(gateway + "/admin/models/smollm2/stop", {method: "POST", mode: "no-cors"}),
        fetch(gateway + "/v1/chat/completions", {method: "POST", mode: "no-cors", body: chat}),
        fetch(gateway + "/v1/chat/completions", {method: "POST", body: chat, headers: {"Content-Type": "text/plain"}}),
    ];
    return (await Promise.allSettled(tries)).map((r) => r.status);
}"""


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Serves one empty HTML page: the second origin the attack script runs on."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def attacker_origin() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInUpstream]:
    server = StandInUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def keyless_gateway(tmp_path_factory: pytest.TempPathFactory, standin: StandInUpstream) -> Iterator[ServedGateway]:
    """The default exposure: 127.0.0.1, no API keys (admin open on loopback)."""
    config = {
        "models": {
            "smollm2": smollm2_model(parallel=2, context=2048),
            "standin": {"engine": "remote", "url": standin.url},
        },
        "server": {"queue_timeout_s": 120},
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("origin-guard"))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # evil.test resolves to the gateway: a DNS-rebinding attacker's name, as the browser would see it.
    with chromium(["--host-resolver-rules=MAP evil.test 127.0.0.1"]) as launched:
        yield launched


def test_page_on_another_origin_can_neither_stop_an_engine_nor_chat(
    browser: Browser, attacker_origin: str, keyless_gateway: ServedGateway, standin: StandInUpstream
) -> None:
    assert keyless_gateway.status("smollm2")["state"] == "ready"
    before = len(standin.received)
    context = browser.new_context()
    page = context.new_page()
    page.goto(attacker_origin)
    outcomes = page.evaluate(ATTACK, keyless_gateway.url)
    context.close()
    # The no-cors fetches resolve (opaque answers); what matters is what the gateway did.
    assert outcomes[:2] == ["fulfilled", "fulfilled"]
    assert keyless_gateway.status("smollm2")["state"] == "ready"
    assert len(standin.received) == before


def test_rebound_dns_name_gets_403_not_the_console(browser: Browser, keyless_gateway: ServedGateway) -> None:
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"http://evil.test:{keyless_gateway.port}/ui")
    assert response is not None and response.status == 403
    assert "host_not_allowed" in page.content()
    context.close()


def test_the_console_itself_still_works(browser: Browser, keyless_gateway: ServedGateway) -> None:
    """Same-origin calls (the console's own fetches, with Origin set) pass the guard."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{keyless_gateway.url}/ui")
    status = page.evaluate("""async () => {
        const r = await fetch("/v1/chat/completions", {method: "POST", headers: {"Content-Type": "application/json"},
            body: JSON.stringify({model: "standin", messages: [{role: "user", content: "hi"}]})});
        return r.status;
    }""")
    context.close()
    assert status == 200
    assert httpx.get(f"{keyless_gateway.url}/status", timeout=10).status_code == 200
