"""After an erasure, a dump of the whole database holds the value nowhere (SPEC "Erasure"):
contacts, links, the inbox, dead letters (raw payloads searched as text), the feed."""

from __future__ import annotations

import subprocess

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine, make_url

from identity.db import run_in_transaction
from identity.event_services import accept_events, record_dead_letter
from identity.events import Event
from identity.normalize import Identifiers

EMAIL = "marguerite.zyx@shop.test"
PHONE = "+14155552671"  # E.164 of (415) 555-2671
SPELLINGS = [EMAIL, "Marguerite.Zyx", "4155552671", "415) 555-2671", "555-2671", "14155552671"]


def dump(engine: Engine) -> str:
    url = make_url(engine.url)
    return subprocess.run(
        ["pg_dump", "--data-only", "--inserts", "-h", url.host or "127.0.0.1",
         "-p", str(url.port or 5432), "-U", url.username or "postgres", url.database or ""],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_dump_holds_no_trace_of_an_erased_email_and_phone(
    client: FlaskClient, engine: Engine
) -> None:
    client.post("/identify", json={"email": EMAIL, "phoneNumber": "+1 (415) 555-2671"})
    client.post("/identify", json={"email": "friend@shop.test", "phoneNumber": "5550009"})
    client.post("/identify", json={"email": EMAIL, "phoneNumber": "5550009"})  # merge: a link
    client.post("/identify", json={"email": "friend@shop.test", "phoneNumber": PHONE})  # link
    client.get("/changes")
    run_in_transaction(
        engine,
        lambda conn: accept_events(
            conn, [Event("queued-1", Identifiers(email=EMAIL, phone=None), source="checkout")]
        ),
    )
    raw = {"eventId": "dead-1", "email": "Marguerite.Zyx@SHOP.test",
           "phoneNumber": "(415) 555-2671", "source": "pos"}  # fmt: skip
    run_in_transaction(
        engine, lambda conn: record_dead_letter(conn, event_id="dead-1", payload=raw, error="x")
    )
    before = dump(engine)
    assert EMAIL in before and "4155552671" in before and "555-2671" in before

    by_email = client.post("/erasures", json={"email": EMAIL.upper()}).get_json()
    assert by_email["erased"]["events"] == 2  # the queued event and the dead letter
    # Any spelling with the country code finds the E.164 form and the bare digits alike.
    by_phone = client.post("/erasures", json={"phoneNumber": "1 415.555.2671"}).get_json()
    assert by_phone["erased"]["contacts"] == 1 and by_phone["erased"]["links"] == 1
    client.get("/changes")  # the feed, numbered, is part of the dump too

    after = dump(engine)
    for spelling in SPELLINGS:
        assert spelling.lower() not in after.lower(), spelling
    # What was not erased is still there: friend's values, and the persons' structure.
    assert "friend@shop.test" in after and "5550009" in after
