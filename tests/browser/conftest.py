"""Browser fixtures: Debian's Chromium driven by Playwright, at phone size, against the
real app served on 127.0.0.1 (a free port) on the test harness's migrated database.

Reusable by every journey:
- `live_server`  the app (CSRF on, like production) served by werkzeug in a thread
- `browser`      one headless Chromium for the session (never a downloaded browser build)
- `page`         a fresh phone-sized context per test (390×844, touch, zh-CN first)
- `sms_codes`    the codes the development SMS backend "sent" (read from its log)
- `shoot`        save a screenshot under the session's screenshot folder
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from clinic.app import create_app
from tests.conftest import make_config
from tests.support.live_server import LiveServer

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def live_app(app: Flask, backend: dict[str, Any]) -> Flask:
    """The app as a browser meets it, on the harness's (Alembic-migrated) database."""
    return create_app(make_config(backend))


@pytest.fixture(scope="module")
def live_server(live_app: Flask) -> Iterator[LiveServer]:
    with LiveServer(live_app) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, live_server: LiveServer, ctx: Flask) -> Iterator[Any]:
    """A phone-sized page whose relative URLs go to the live server; tables are emptied after."""
    context = browser.new_context(base_url=live_server.url, locale="zh-CN", **PHONE)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


class _SmsCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.codes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.codes += re.findall(r"verification code (\d{6})", record.getMessage())


@pytest.fixture
def sms_codes() -> Iterator[list[str]]:
    """Codes written by the development SMS backend (identity.otp.LogVerifier), in order."""
    handler = _SmsCapture()
    logger = logging.getLogger("clinic.sms")
    logger.addHandler(handler)
    try:
        yield handler.codes
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = (
        Path(os.environ["SCREENSHOT_DIR"]) if os.environ.get("SCREENSHOT_DIR") else tmp_path_factory.mktemp("screens")
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def shoot(page: Any, screenshot_dir: Path, backend: dict[str, Any]) -> Callable[[str], Path]:
    def take(name: str) -> Path:
        path = screenshot_dir / f"{backend['name']}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
