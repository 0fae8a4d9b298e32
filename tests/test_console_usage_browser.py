"""The console's usage & keys panel in a real browser (Debian's Chromium via Playwright) against `gpufleet serve`.

The model is a STAND-IN upstream (tests/standin_upstream.py): the panel shows the gateway's ledger, not
generations. Set GPUFLEET_CONSOLE_USAGE_SCREENSHOT=docs/img/console-usage.png to refresh the docs' screenshot.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from gpufleet.limits import Limits
from gpufleet.store import KeyRecord, new_secret, open_store
from tests.chromium_browser import chromium
from tests.served_gateway import ServedGateway, start_gateway, stop_gateway
from tests.standin_upstream import StandInUpstream

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN = "console-admin-key"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedGateway, str]]:
    upstream = StandInUpstream().start()
    tmp = tmp_path_factory.mktemp("usage-console")
    db = f"sqlite:///{tmp}/store.sqlite3"
    alice = new_secret()
    store = open_store(db)
    store.add_key(KeyRecord.create(name="alice", secret=alice, models=("qwen",), limits=Limits(rpm=2)))
    store.add_key(KeyRecord.create(name="bob", secret=new_secret()))
    store.close()
    config = {
        "server": {"api_keys": [ADMIN], "database_url": db},
        "models": {"qwen": {"engine": "remote", "url": upstream.url}},
    }
    gateway = start_gateway(config, tmp)
    body = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}
    statuses = [
        httpx.post(
            f"{gateway.url}/v1/chat/completions", json=body, timeout=30, headers={"Authorization": f"Bearer {alice}"}
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    yield gateway, alice
    stop_gateway(gateway)
    upstream.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, served: tuple[ServedGateway, str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(f"{served[0].url}/ui")
    yield page
    context.close()
    assert script_errors == [], f"the console's scripts threw: {script_errors}"


def use_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")


def test_usage_panel_shows_top_users_limits_hit_and_tokens_per_day(page: Page) -> None:
    use_key(page, ADMIN)
    row = page.locator('#usage-totals tr[data-key="alice"]')
    expect(row.locator("td").nth(1)).to_have_text("3")  # requests
    expect(row.locator("td.limited")).to_have_text("1")  # the 429
    expect(page.locator("#usage-chart rect.bar")).to_have_count(1)  # one day, one key with tokens
    expect(page.locator('#key-list tr[data-key="bob"] td.state')).to_have_text("active")
    expect(page.locator('#key-list tr[data-key="alice"]')).to_contain_text("rpm 2")
    shot = os.environ.get("GPUFLEET_CONSOLE_USAGE_SCREENSHOT")
    if shot:
        page.locator("#usage").screenshot(path=str(Path(shot)))


def test_admin_makes_a_key_sees_it_once_and_revokes_it(page: Page, served: tuple[ServedGateway, str]) -> None:
    use_key(page, ADMIN)
    form = page.locator("#key-create")
    form.locator("input[name=name]").fill("dave")
    form.locator("input[name=rpm]").fill("5")
    form.locator("input[name=expires]").fill("30d")
    form.locator("button[type=submit]").click()
    secret = page.locator("#key-secret")
    expect(secret).to_have_text(re.compile(r"^gfk-"))
    key = secret.inner_text()
    expect(page.locator('#key-list tr[data-key="dave"] td.state')).to_have_text("active")
    models = httpx.get(f"{served[0].url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert models.status_code == 200  # the key works at once
    page.locator('#key-list tr[data-key="dave"] button.revoke').click()
    expect(page.locator('#key-list tr[data-key="dave"] td.state')).to_have_text("revoked")
    page.reload()
    expect(page.locator("#key-secret")).to_have_count(0)  # shown once: gone after a reload
    again = httpx.get(f"{served[0].url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert again.status_code == 401


def test_a_team_key_sees_no_usage_or_keys(page: Page, served: tuple[ServedGateway, str]) -> None:
    use_key(page, served[1])
    expect(page.locator("#usage-message")).to_contain_text("need an admin key")
    expect(page.locator("#key-list tbody tr")).to_have_count(0)
    expect(page.locator("#usage-totals tbody tr")).to_have_count(0)
