"""Debian's Chromium under Playwright, for the browser tests (Playwright's own browser download is unreachable)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches beyond this machine (no first-run, sync, update or QUIC traffic).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium(extra_args: Sequence[str] = ()) -> Iterator[Browser]:
    """A launched Chromium (fails the test, naming the fix, when `make test` has not installed it)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: 'make test' installs Debian's chromium (apt-get install chromium);"
            " or deselect these tests with -m 'not browser'"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args])
        yield browser
        browser.close()
