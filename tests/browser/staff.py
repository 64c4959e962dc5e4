"""What the staff journeys share: a desk-sized browser context (1366×768) and the raw-code check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.support import factories as f

DESK = {"viewport": {"width": 1366, "height": 768}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
PHONE_OR_DESK = {"patient": PHONE, "physician": DESK, "pharmacist": DESK, "admin": DESK}
# What must never reach a person's eyes: snake_case codes, UUIDs outside links, UTC.
SNAKE = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


@contextmanager
def desk(
    browser: Any, base_url: str, shots: Path, prefix: str, size: dict[str, Any] | None = None
) -> Iterator[tuple[Any, Any]]:
    context = browser.new_context(base_url=base_url, locale="zh-CN", **(size or DESK))
    context.set_default_timeout(20_000)
    page = context.new_page()

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{prefix}-{name}.png"), full_page=True)

    try:
        yield page, shot
    finally:
        context.close()


def log_in(page: Any, username: str, password: str = f.PASSWORD) -> None:
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.locator("main form button[type=submit]").first.click()


def raw_codes(page: Any) -> list[str]:
    """The raw codes a person can read on the page now (visible text, not links' targets).

    Text marked translate="no" is data, not a code: a login name, a file's column names."""
    text = page.locator("body").inner_text()
    for literal in page.locator('[translate="no"]').all_inner_texts():
        text = text.replace(literal, " ")
    found = SNAKE.findall(text) + UUID.findall(text)
    if re.search(r"\bUTC\b", text):
        found.append("UTC")
    return found


def fits(page: Any) -> bool:
    """Nothing wider than the screen (no horizontal scrolling)."""
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width <= int(page.viewport_size["width"])


def assert_readable(page: Any) -> None:
    assert raw_codes(page) == [], (page.url, raw_codes(page))
    assert fits(page), page.url
    expect(page.locator("body")).not_to_contain_text("Traceback")
