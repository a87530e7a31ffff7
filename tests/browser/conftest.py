"""The browser tests' harness: Playwright driving Debian's Chromium (``/usr/bin/chromium``, never a downloaded
browser), axe-core injected into a page to check it, and screenshots for the README. The tests' browser contexts
bypass the pages' Content-Security-Policy, which would otherwise (rightly) refuse the injected axe-core script.

Without Chromium the tests skip and say why (``./rj test`` installs it where it can); on CI (``CI`` set) a missing
browser fails them instead, so that they cannot silently stop running there."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("RJ_CHROMIUM", "/usr/bin/chromium"))
VENDOR = Path(__file__).resolve().parent / "vendor"
AXE = VENDOR / "axe-4.14.1.min.js"
#: Where the screenshots go: the README's pictures when asked (RJ_SCREENSHOTS=docs), else a scratch folder, so a
#: test run never leaves the checkout changed.
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    if os.environ.get("RJ_SCREENSHOTS") == "docs"
    else Path(os.environ.get("RJ_SCREENSHOTS") or Path(tempfile.gettempdir()) / "rj-screenshots")
)
#: What the console is held to: WCAG 2.0, 2.1 and 2.2 A and AA.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
NARROWEST = {"width": 320, "height": 640}


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; ./rj test does as root)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        await browser.close()


async def axe_problems(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one line each (empty: none)."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        AXE_TAGS,
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


async def fits_the_screen(page: Any) -> bool:
    """No horizontal scrolling: the page is no wider than the window."""
    return bool(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
