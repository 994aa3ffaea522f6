"""The explorer page's guards: open files, a CSP without inline scripts, hostile values
shown as text, and a key that stays out of URLs, the HTML and the log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from api.ui import STATIC_DIR
from tests.support.browser import console_errors
from tests.support.server import Server, serve
from tests.ui.conftest import Explorer
from tests.ui.people import ADMIN_KEY, READ_KEY, Api, unique

PAGE_FILES = ("index.html", "app.js", "app.css")


def test_the_page_is_served_without_a_key_and_with_a_content_security_policy(
    ui_server: Server,
) -> None:
    for path, mimetype in (
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ):
        status, headers, body = ui_server.request("GET", path)
        assert status == 200, (path, body[:200])
        assert headers["Content-Type"].startswith(mimetype), headers
        csp = headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert directives["default-src"] == "'self'"
        assert directives["object-src"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert ui_server.request("GET", "/ui")[0] == 308
    # The page's files are open; the data is not.
    assert ui_server.request("GET", "/ui/../api/auth.py")[0] == 404
    assert ui_server.request("GET", "/ui/nope.js")[0] == 404
    assert ui_server.request_json("POST", "/lookup", {"email": "a@b.test"})[0] == 401
    assert ui_server.request_json("GET", "/persons/1")[0] == 401


def test_the_page_files_hold_no_inline_script_no_html_sink_and_no_external_url() -> None:
    html, js, css = (Path(STATIC_DIR, name).read_text(encoding="utf-8") for name in PAGE_FILES)
    # Inline scripts and handlers would be refused by the CSP: none are needed.
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert re.findall(r"\son[a-z]+\s*=", html) == []
    # Data reaches the DOM through textContent and attributes only.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    # No CDN, no font or image from elsewhere: the page works without a network.
    for text in (html, js.replace('"http://www.w3.org/2000/svg"', "SVG_NS"), css):
        assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text) == []


# What an attacker can get past normalization: no <, >, quotes, parentheses or spaces,
# but entities without their semicolon, backticks and apostrophes.
HOSTILE_LOCAL_PARTS = (
    "&ltimg/src=x/onerror=alert`1`&gt",
    "&ltscript&gtalert`2`&lt/script&gt",
    "x'/onfocus='alert`3`'/autofocus='",
    "{{constructor.constructor}}",
)


def test_hostile_values_are_shown_as_text_and_never_run(
    page: Explorer, api: Api, ui_server: Server
) -> None:
    tag = unique()
    # The classic payloads do not even get in: normalization refuses them.
    for refused in ('"<script>alert(1)</script>"@x.com', "<img src=x onerror=alert(1)>@x.com"):
        status, answer = api.call("POST", "/identify", {"email": refused, "phoneNumber": "5550001"})
        assert status == 400 and answer["field"] == "email"
    emails = [f"{local}.{tag}@x.com" for local in HOSTILE_LOCAL_PARTS]
    phone = f"7{int(tag, 16) % 10**8:08d}"
    first = api.identify(emails[0], phone)
    for email in emails[1:]:
        api.identify(email, phone)
    page.open(f"#/person/{first['primaryContactId']}")
    page.wait_rendered(first["primaryContactId"])
    page.assert_no_alert()
    # Every value is on the page as the very text stored (entities not decoded).
    cells = [c.text for c in page.find_all("#contacts tbody td:nth-child(2)")]
    assert cells == emails
    summary = page.find("#person-summary").text
    for email in emails:
        assert email in summary
    # Nothing became markup: no image, no extra script, no handler attribute.
    counts = page.driver.execute_script(
        "return [document.images.length, document.scripts.length,"
        " document.querySelectorAll('[onerror],[onfocus],[autofocus]').length]"
    )
    assert counts == [0, 1, 0]
    # The same values in the search results and in the why-chain.
    page.load("#/")
    page.search(phone=phone)
    results = page.visible("#search-results tbody tr").text
    for email in emails:
        assert email in results
    # Typing a refused payload into the search box: the error is text too.
    page.search(email="<img src=x onerror=alert(1)>@x.com")
    page.wait(lambda d: d.find_element(By.ID, "search-error").text.startswith("Email:"))
    page.assert_no_alert()
    assert page.driver.execute_script("return document.images.length") == 0
    page.assert_no_console_errors()


def test_an_inline_script_is_refused_by_the_policy(page: Explorer) -> None:
    """The CSP header really binds: even a script element added to the DOM does not run."""
    page.open(key=READ_KEY)
    page.driver.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = 'window.__inlineRan = true';"
        "document.body.appendChild(s);"
    )
    assert page.driver.execute_script("return window.__inlineRan === true") is False
    messages = [e["message"] for e in console_errors(page.driver)]
    assert any("Content Security Policy" in m for m in messages), messages


def test_the_key_never_appears_in_a_url_the_html_or_the_log(
    page: Explorer, api: Api, ui_server: Server
) -> None:
    person = api.identify(f"key.{unique()}@shop.test", None)
    page.open(key=None)
    # Without a key the page asks for one (the API answered 401) and shows no data.
    page.wait(lambda d: d.find_element(By.ID, "key-panel").is_displayed())
    field = page.find("#key-input")
    assert field.get_attribute("type") == "password"
    page.enter_key(ADMIN_KEY)
    assert page.driver.execute_script("return document.body.dataset.role") == "admin"
    page.search(email=person["emails"][0])
    page.visible("#search-results tbody tr a.person-link").click()
    page.wait_rendered(person["primaryContactId"])
    # The key: in this tab's sessionStorage only.
    stored = page.driver.execute_script(
        "return sessionStorage.getItem('identity-explorer.api-key')"
    )
    assert stored == ADMIN_KEY
    assert page.driver.execute_script("return localStorage.length + document.cookie.length") == 0
    assert ADMIN_KEY not in page.driver.current_url
    assert ADMIN_KEY not in page.driver.page_source
    assert page.find("#key-input").get_attribute("value") == ""
    history = page.driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert history and not [url for url in history if ADMIN_KEY in url]
    # A new page load in the same tab keeps the key (entered once per browser session) ...
    page.load(f"#/person/{person['primaryContactId']}")
    page.wait_rendered(person["primaryContactId"])
    assert not page.find("#key-panel").is_displayed()
    # ... until "Forget key".
    page.find("#forget-key").click()
    page.wait(lambda d: d.find_element(By.ID, "key-panel").is_displayed())
    assert page.driver.execute_script("return sessionStorage.length") == 0
    # The server's log (at DEBUG) never holds it either.
    assert ADMIN_KEY not in ui_server.log()
    assert READ_KEY not in ui_server.log()


@pytest.fixture(scope="module")
def open_server(pg_url: str) -> Iterator[Server]:
    """No key configured: open development mode on loopback."""
    with serve({"DATABASE_URL": pg_url, "WEB_CONCURRENCY": "1"}) as server:
        yield server


def test_the_page_works_without_keys_in_development_mode(
    chromium: webdriver.Chrome, open_server: Server
) -> None:
    page = Explorer(chromium, open_server)
    console_errors(chromium)
    email = f"open.{unique()}@shop.test"
    status, answer = open_server.request_json("POST", "/identify", {"email": email})
    assert status == 200, answer
    page.open(key=None)
    assert page.driver.execute_script("return document.body.dataset.role") == "open"
    assert not page.find("#key-panel").is_displayed()
    page.search(email=email)
    row = page.visible("#search-results tbody tr")
    assert email in row.text
    page.assert_no_alert()
    page.assert_no_console_errors()
