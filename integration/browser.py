"""A headless Chromium driven by selenium: the search page's test and its screenshot.

Debian's packages (``apt-get install chromium chromium-driver``; ``make browser`` does it)
put the browser and its driver at fixed paths; ``CIR_CHROMIUM`` and ``CIR_CHROMEDRIVER``
override them. Selenium's own driver manager is never asked: it would download a driver.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from cir_module.lazy import missing_extra

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

__all__ = ["browser_paths", "headless_chromium", "save_screenshot"]


def browser_paths() -> tuple[str, str] | None:
    """The Chromium binary and its driver, or None when either is missing."""
    browser = os.environ.get("CIR_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("CIR_CHROMEDRIVER") or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1280, height: int = 1000) -> Chrome:
    """A headless Chromium of this window size (close it with ``quit()``)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "driving Chromium") from exc
    paths = browser_paths()
    if paths is None:
        raise RuntimeError("no chromium / chromedriver: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (
        "--headless=new",
        f"--window-size={width},{height}",
        # As root in a container: Chromium's sandbox needs namespaces it is not given, and
        # /dev/shm is small there.
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)


def save_screenshot(driver: Chrome, path: str | Path) -> Path:
    """The whole page (not only the window) as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A window screenshot stops at the window's bottom edge; the DevTools protocol captures
    # the page beyond it.
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
