"""``make screenshot``: docs/explorer.png from a real person page, and the first-render time.

Builds a private PostgreSQL database, serves the app with gunicorn (tests/support/server.py),
seeds a small family through ``POST /identify``, opens the person's page in headless
Chromium with an admin key, picks two contacts to show a why-chain, and saves the page.
Then it measures the first render of a 50-contact person (printed, never asserted).

    python -m tests.ui.screenshot [docs/explorer.png]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import start_chromium
from tests.support.db import ROOT, create_pg_database, drop_pg_database, migrate
from tests.support.server import serve
from tests.ui.people import ADMIN_KEY, READ_KEY, Api, chain_person, unique

FAMILY = [
    ("doc@hillvalley.edu", "555-0100"),
    ("emmett.brown@hillvalley.edu", "555-0100"),
    ("emmett.brown@hillvalley.edu", "555-1955"),
    ("clara@hillvalley.edu", "555-1885"),
    ("clara.brown@hillvalley.edu", "555-1885"),
    ("clara.brown@hillvalley.edu", "555-1955"),  # glues Clara's person to Doc's: a merge
    ("jules@hillvalley.edu", "555-1955"),
    ("verne@hillvalley.edu", "555-1991"),
    ("jules@hillvalley.edu", "555-1991"),
]
RUNS = 5


def wait_rendered(driver: object, contact_id: int) -> None:
    WebDriverWait(driver, 30).until(  # type: ignore[arg-type]
        lambda d: d.execute_script("return document.body.dataset.renderedPerson") == str(contact_id)
    )


def main(out: Path) -> None:
    name = f"identity_screenshot_{unique()}"
    url = create_pg_database(name)
    try:
        migrate(url)
        env = {"DATABASE_URL": url, "API_KEYS": READ_KEY, "ADMIN_API_KEYS": ADMIN_KEY}
        with serve(env) as server:
            api = Api(server)
            people = [api.identify(email, phone) for email, phone in FAMILY]
            primary = people[-1]["primaryContactId"]
            clara = people[3]["primaryContactId"]
            verne = people[7]["primaryContactId"]
            base = f"http://127.0.0.1:{server.port}/ui/"
            driver = start_chromium(width=1280, height=900)
            try:
                driver.get(base)
                WebDriverWait(driver, 30).until(
                    lambda d: d.find_element(By.ID, "key-panel").is_displayed()
                )
                driver.find_element(By.ID, "key-input").send_keys(ADMIN_KEY)
                driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
                WebDriverWait(driver, 30).until(
                    lambda d: d.execute_script("return document.body.dataset.role") == "admin"
                )
                driver.execute_script("location.hash = arguments[0]", f"#/person/{primary}")
                wait_rendered(driver, primary)
                for contact in (clara, verne):
                    driver.find_element(
                        By.CSS_SELECTOR, f'#graph .node[data-contact="{contact}"]'
                    ).click()
                WebDriverWait(driver, 30).until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, "#why-answer .why-summary")
                )
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1280, min(int(height) + 40, 3000))
                driver.execute_script("window.scrollTo(0, 0)")
                out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(out))
                print(f"wrote {out} (person #{primary}, {len(FAMILY)} requests)")

                # The first render of a 50-contact person: a fresh page load each time,
                # from the route to the drawn page (renderMs, the three API calls included)
                # and from the start of navigation (renderedAt).
                big = chain_person(api, unique(), 50)["primary"]
                route_ms, page_ms = [], []
                for _ in range(RUNS):
                    driver.get("about:blank")
                    driver.get(f"{base}#/person/{big}")
                    wait_rendered(driver, big)
                    route_ms.append(
                        float(driver.execute_script("return document.body.dataset.renderMs"))
                    )
                    page_ms.append(
                        float(driver.execute_script("return document.body.dataset.renderedAt"))
                    )
                print(
                    f"first render of a 50-contact person, median of {RUNS} page loads: "
                    f"{statistics.median(route_ms):.0f} ms from the route (API calls included), "
                    f"{statistics.median(page_ms):.0f} ms from the start of navigation "
                    f"(runs: {', '.join(f'{v:.0f}' for v in page_ms)})"
                )
            finally:
                driver.quit()
    finally:
        drop_pg_database(name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "explorer.png")
