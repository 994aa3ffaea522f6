"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium.

No download at run time: the browser and its driver come from apt (``bin/ensure-services
--install browser``, run by ``make test``, installs them as root, or names the command).
A missing browser is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

INSTALL_HINT = (
    "apt-get install -y chromium chromium-driver"
    "  (or, as root: bin/ensure-services --install browser)"
)
CANDIDATE_BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class BrowserMissing(RuntimeError):
    pass


def find_browser() -> tuple[str, str]:
    """(browser binary, chromedriver) from the environment or the PATH."""
    browser = os.environ.get("CHROMIUM_BINARY") or next(
        (p for p in map(shutil.which, CANDIDATE_BROWSERS) if p), None
    )
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if driver is None and Path("/usr/lib/chromium/chromedriver").exists():
        driver = "/usr/lib/chromium/chromedriver"
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    if missing:
        names = " and ".join(missing)
        raise BrowserMissing(f"the browser tests need {names}, not installed: {INSTALL_HINT}")
    assert browser is not None and driver is not None
    return browser, driver


def start_chromium(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium that keeps its console log (to catch script and CSP errors)."""
    browser, driver = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root in CI; the sandbox refuses root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # no network beyond the server under test
        "--disable-component-update",
        "--disable-sync",
        "--metrics-recording-only",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver)
    chrome = webdriver.Chrome(options=options, service=service)
    chrome.set_page_load_timeout(30)
    chrome.set_script_timeout(30)
    return chrome


def console_errors(chrome: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console entries at SEVERE since the last call (script errors, CSP violations)."""
    return [e for e in chrome.get_log("browser") if e.get("level") == "SEVERE"]
