"""The explorer page in a real browser: headless Chromium on a real gunicorn on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import BrowserMissing, console_errors, start_chromium
from tests.support.server import Server, serve
from tests.ui.people import ADMIN_KEY, READ_KEY, Api

WAIT_S = 15


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    try:
        driver = start_chromium()
    except BrowserMissing as error:
        # Never a skip: CI without a browser must fail and say how to get one.
        pytest.fail(str(error), pytrace=False)
    yield driver
    driver.quit()


@pytest.fixture(scope="package")
def ui_server(pg_url: str) -> Iterator[Server]:
    """The API and the page with a read key and an admin key configured."""
    env = {
        "DATABASE_URL": pg_url,
        "API_KEYS": READ_KEY,
        "ADMIN_API_KEYS": ADMIN_KEY,
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "DEBUG",  # the log must not hold the key even at its most talkative
    }
    with serve(env) as server:
        yield server


@pytest.fixture
def api(ui_server: Server) -> Api:
    return Api(ui_server)


class Explorer:
    """The page in the browser: open it, give it a key, wait for what it draws."""

    def __init__(self, driver: webdriver.Chrome, server: Server) -> None:
        self.driver = driver
        self.base = f"http://127.0.0.1:{server.port}"

    def load(self, fragment: str = "#/") -> None:
        """A full page load (about:blank first: a hash change alone would not reload)."""
        self.driver.get("about:blank")
        self.driver.get(f"{self.base}/ui/{fragment}")
        self.wait(lambda d: d.execute_script("return document.body.dataset.role !== undefined"))

    def open(self, fragment: str = "#/", key: str | None = ADMIN_KEY) -> None:
        """Load the page in a fresh session and, when ``key``, type it into the key form."""
        self.driver.get(f"{self.base}/ui/app.css")  # any page of the origin: clear its storage
        self.driver.execute_script("sessionStorage.clear()")
        self.load(fragment)
        if key is not None:
            self.enter_key(key)

    def enter_key(self, key: str) -> None:
        self.wait(lambda d: d.find_element(By.ID, "key-panel").is_displayed())
        field = self.driver.find_element(By.ID, "key-input")
        field.clear()
        field.send_keys(key)
        self.driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()
        self.wait(lambda d: not d.find_element(By.ID, "key-panel").is_displayed())

    def wait(self, condition: Callable[[webdriver.Chrome], Any], timeout: float = WAIT_S) -> Any:
        return WebDriverWait(self.driver, timeout).until(condition)

    def person(self, contact_id: int) -> None:
        """Show a person and wait until the page says it rendered it."""
        self.driver.execute_script("document.body.dataset.renderedPerson = ''")
        self.driver.execute_script("location.hash = arguments[0]", f"#/person/{contact_id}")
        self.wait_rendered(contact_id)

    def wait_rendered(self, contact_id: int) -> None:
        self.wait(
            lambda d: (
                d.execute_script("return document.body.dataset.renderedPerson") == str(contact_id)
            )
        )

    def search(self, email: str = "", phone: str = "") -> None:
        for field_id, value in (("search-email", email), ("search-phone", phone)):
            field = self.driver.find_element(By.ID, field_id)
            field.clear()
            if value:
                field.send_keys(value)
        self.driver.execute_script("document.getElementById('search-results').replaceChildren()")
        self.driver.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> WebElement:
        return self.wait(lambda d: next((e for e in self.find_all(css) if e.is_displayed()), None))

    def node(self, contact_id: int) -> WebElement:
        return self.find(f'#graph .node[data-contact="{contact_id}"]')

    def drawn_nodes(self) -> list[int]:
        return [int(e.get_attribute("data-contact") or 0) for e in self.find_all("#graph .node")]

    def drawn_edges(self) -> set[tuple[int, int]]:
        return {
            (int(e.get_attribute("data-a") or 0), int(e.get_attribute("data-b") or 0))
            for e in self.find_all("#graph .edge:not(.path-extra)")
        }

    def assert_no_alert(self) -> None:
        try:
            alert = self.driver.switch_to.alert
        except NoAlertPresentException:
            return
        text = alert.text
        alert.dismiss()
        raise AssertionError(f"the page ran an alert: {text!r}")

    def assert_no_console_errors(self) -> None:
        """No script error and no CSP violation. (Answers such as the 401 that makes the
        page ask for a key are logged by Chromium as network errors: those are expected.)"""
        errors = [e for e in console_errors(self.driver) if e.get("source") != "network"]
        assert errors == [], errors


@pytest.fixture
def page(chromium: webdriver.Chrome, ui_server: Server) -> Iterator[Explorer]:
    explorer = Explorer(chromium, ui_server)
    console_errors(chromium)  # drop what earlier tests left in the log
    yield explorer
    explorer.assert_no_alert()


def pairs(edges: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(min(e["a"], e["b"]), max(e["a"], e["b"])) for e in edges}
