"""Guards through the API on PostgreSQL and SQLite (SPEC "Guards against junk and shared
values", "Access", "Erasure"'s suppress): ignored values reported and never stored, 422 when
nothing is left, GET /guards and the admin calls, suppression, the lock-free repeat lookup,
reads, metrics, and the counter-phone scenario."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.settings import Secret, Settings
from tests.conftest import make_settings, opened_app
from tests.support.graph import table_snapshot

THRESHOLD = 3
HASH_KEY = "test-suppression-key-0123456789"
MARTY = "marty@shop.test"
COUNTER = "5550100"  # a shop's counter phone


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """A low threshold, so that a few requests make a value generic; suppression on."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    return make_settings(url, generic_threshold=THRESHOLD, suppression_hash_key=Secret(HASH_KEY))


def post(client: FlaskClient, path: str, body: Any, status: int = 200, **kw: Any) -> Any:
    response = client.post(path, json=body, **kw)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def get(client: FlaskClient, path: str, status: int = 200, **kw: Any) -> Any:
    response = client.get(path, **kw)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def identify(client: FlaskClient, email: str | None, phone: str | None, status: int = 200) -> Any:
    body = {k: v for k, v in (("email", email), ("phoneNumber", phone)) if v is not None}
    return post(client, "/identify", body, status)


def stored_values(engine: Engine) -> set[str]:
    """Every email and phone in contacts and links."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT email, phone_number FROM contact"
                " UNION ALL SELECT email, phone_number FROM link"
            )
        ).all()
    return {v for r in rows for v in r if v is not None}


def changes(client: FlaskClient, kind: str | None = None) -> list[dict[str, Any]]:
    found = get(client, "/changes?limit=1000")["changes"]
    return [c for c in found if kind is None or c["kind"] == kind]


def make_generic(client: FlaskClient, phone: str = COUNTER) -> None:
    """THRESHOLD emails on ``phone``, then one more: the phone becomes generic."""
    for i in range(THRESHOLD):
        assert "ignored" not in identify(client, f"c{i}@shop.test", phone)
    crossing = identify(client, f"c{THRESHOLD}@shop.test", phone)
    assert crossing["ignored"] == [{"field": "phoneNumber", "reason": "generic"}]


# --- Ignored values ------------------------------------------------------------------------


def test_a_blocked_phone_is_ignored_reported_and_not_stored(
    client: FlaskClient, engine: Engine
) -> None:
    answer = identify(client, MARTY, "000-000-0000")
    assert answer["ignored"] == [{"field": "phoneNumber", "reason": "blocked"}]
    assert answer["contact"]["emails"] == [MARTY]
    assert answer["contact"]["phoneNumbers"] == []
    assert list(answer) == ["contact", "ignored"]  # beside contact, the v1 shape kept
    assert stored_values(engine) == {MARTY}


def test_a_blocked_email_is_ignored_and_the_phone_alone_applied(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, MARTY, "5550101")
    # Were the email kept, this would glue a stranger to Marty's phone.
    answer = identify(client, "Test@Test.com", "5550101")
    assert answer["ignored"] == [{"field": "email", "reason": "blocked"}]
    assert answer["contact"]["emails"] == [MARTY]
    assert stored_values(engine) == {MARTY, "5550101"}


def test_nothing_ignored_means_no_ignored_field(client: FlaskClient) -> None:
    assert list(identify(client, MARTY, "5550101")) == ["contact"]


def test_every_value_ignored_is_422_and_writes_no_contact_or_link(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, MARTY, "5550101")
    before = table_snapshot(engine)
    both = identify(client, "noreply@shop.test", "1234567890", status=422)
    assert set(both) == {"error", "field"} and both["field"] == "email"
    one = identify(client, None, "9999999999", status=422)
    assert one["field"] == "phoneNumber" and "blocked" in one["error"]
    assert table_snapshot(engine) == before


# --- Generic values ------------------------------------------------------------------------


def test_the_request_crossing_the_threshold_marks_the_value_and_goes_on_without_it(
    client: FlaskClient, engine: Engine
) -> None:
    make_generic(client)
    with engine.connect() as conn:
        holders = conn.execute(
            text("SELECT email FROM contact WHERE phone_number = :p"), {"p": COUNTER}
        ).scalars()
        assert sorted(holders) == [f"c{i}@shop.test" for i in range(THRESHOLD)]
    later = identify(client, "later@shop.test", COUNTER)
    assert later["ignored"] == [{"field": "phoneNumber", "reason": "generic"}]
    assert later["contact"]["phoneNumbers"] == [] and later["contact"]["secondaryContactIds"] == []
    # The phone alone names no one any more.
    assert identify(client, None, COUNTER, status=422)["field"] == "phoneNumber"
    assert len(changes(client, "guard.marked")) == 1


def test_a_partner_that_is_itself_ignored_does_not_count(client: FlaskClient) -> None:
    for i in range(THRESHOLD):
        identify(client, f"c{i}@shop.test", COUNTER)
    # Blocked emails would be partners THRESHOLD + 1, + 2: they are not partners at all.
    for junk in ("null@shop.test", "anyone@example.org"):
        answer = identify(client, junk, COUNTER)
        assert answer["ignored"] == [{"field": "email", "reason": "blocked"}]
    assert get(client, "/guards")["generic"] == []
    assert "ignored" not in identify(client, "c0@shop.test", COUNTER)


def test_get_guards_lists_patterns_generic_values_and_the_suppressed_count(
    client: FlaskClient,
) -> None:
    make_generic(client)
    guards = get(client, "/guards")
    assert r"(\d)\1{6,}" in guards["blocked"]["phoneNumber"]
    assert r".+@example\.(com|org|net)" in guards["blocked"]["email"]
    (generic,) = guards["generic"]
    assert generic["field"] == "phoneNumber" and generic["value"] == COUNTER
    assert generic["partners"] == THRESHOLD + 1
    assert generic["markedAt"]  # since when
    assert guards["suppressed"] == 0
    assert guards["genericThreshold"] == THRESHOLD
    assert "not retroactive" in guards["note"]


def test_admin_mark_and_clear_are_in_the_feed_without_the_value(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, MARTY, "5550101")
    marked = post(client, "/guards/generic", {"email": " Marty@Shop.Test "}, 201)["guard"]
    assert marked["field"] == "email" and marked["value"] == MARTY and marked["partners"] == 1
    answer = identify(client, MARTY, "5550199")
    assert answer["ignored"] == [{"field": "email", "reason": "generic"}]
    assert post(client, "/guards/generic", {"email": MARTY}, 409)["field"] == "email"

    delete = client.delete(f"/guards/generic/{marked['id']}")
    assert delete.status_code == 204
    assert "ignored" not in identify(client, MARTY, "5550199")

    guard_changes = changes(client, "guard.marked") + changes(client, "guard.cleared")
    assert [(c["kind"], c["payload"]) for c in guard_changes] == [
        ("guard.marked", {"guardId": marked["id"], "reason": "generic"}),
        ("guard.cleared", {"guardId": marked["id"], "reason": "generic"}),
    ]
    feed_text = json.dumps(changes(client))
    assert MARTY not in feed_text and "5550101" not in feed_text


def test_a_phone_is_marked_by_its_normalized_value(client: FlaskClient) -> None:
    guard = post(client, "/guards/generic", {"phoneNumber": "(555) 010-0"}, 201)["guard"]
    assert guard == {**guard, "field": "phoneNumber", "value": COUNTER, "partners": 0}
    assert identify(client, MARTY, 5550100)["ignored"][0]["reason"] == "generic"


def test_clearing_a_value_that_is_not_generic_is_404(client: FlaskClient) -> None:
    response = client.delete("/guards/generic/12345")
    assert response.status_code == 404 and response.get_json()["error"]
    assert client.delete(f"/guards/generic/{2**63}").status_code == 404
    make_generic(client)
    (guard,) = get(client, "/guards")["generic"]
    assert client.delete(f"/guards/generic/{guard['id']}").status_code == 204
    assert client.delete(f"/guards/generic/{guard['id']}").status_code == 404  # twice
    assert changes(client, "guard.cleared") and len(changes(client, "guard.cleared")) == 1


def test_a_cleared_value_gains_threshold_more_partners_before_it_is_marked_again(
    client: FlaskClient,
) -> None:
    """SPEC: the clear keeps the partners the value had as a baseline; the value is marked
    again (same guard id) only once it gains GENERIC_THRESHOLD more."""
    make_generic(client)
    (guard,) = get(client, "/guards")["generic"]
    assert client.delete(f"/guards/generic/{guard['id']}").status_code == 204
    for i in range(THRESHOLD):
        assert "ignored" not in identify(client, f"after{i}@shop.test", COUNTER)
    crossing = identify(client, "one-more@shop.test", COUNTER)
    assert crossing["ignored"] == [{"field": "phoneNumber", "reason": "generic"}]


@pytest.mark.parametrize(
    "body",
    [
        {"email": MARTY, "phoneNumber": "5550101"},  # two selectors
        {"email": MARTY, "reason": "shop"},  # an unknown field
        {},
        {"email": None, "phoneNumber": None},
        {"email": "not-an-address"},
        {"phoneNumber": "12"},
        {"phoneNumber": True},
    ],
)
def test_mark_refuses_bad_input_with_400(client: FlaskClient, engine: Engine, body: Any) -> None:
    assert post(client, "/guards/generic", body, 400)["error"]
    assert get(client, "/guards")["generic"] == []


def test_mark_refuses_a_body_that_is_not_a_json_object(client: FlaskClient) -> None:
    assert post(client, "/guards/generic", [MARTY], 400)["error"]
    response = client.post("/guards/generic", data="x", content_type="text/plain")
    assert response.status_code == 415


def test_events_posted_without_a_broker_are_screened_with_the_apps_guards(
    client: FlaskClient, engine: Engine
) -> None:
    """The embedded /events applies with the app's policy (its threshold, not the default)."""
    events = [
        {"eventId": f"ev-{i}", "email": f"c{i}@shop.test", "phoneNumber": COUNTER}
        for i in range(THRESHOLD + 1)
    ]
    events.append({"eventId": "ev-junk", "email": "none@shop.test", "phoneNumber": "0123456789"})
    assert post(client, "/events", events, 202)["status"] == "applied"
    with engine.connect() as conn:
        notes = dict(conn.execute(text("SELECT event_id, ignored FROM processed_event")).all())
    assert notes[f"ev-{THRESHOLD}"] == "phoneNumber:generic"
    assert notes["ev-junk"] == "email:blocked,phoneNumber:blocked"
    assert [g["value"] for g in get(client, "/guards")["generic"]] == [COUNTER]
    assert "none@shop.test" not in stored_values(engine)


# --- The lock-free repeat lookup and reads -------------------------------------------------


def test_a_repeat_of_a_held_pair_whose_value_became_generic_reports_it_ignored(
    client: FlaskClient, engine: Engine
) -> None:
    held = identify(client, MARTY, COUNTER)
    assert list(identify(client, MARTY, COUNTER)) == ["contact"]  # the lock-free repeat
    post(client, "/guards/generic", {"phoneNumber": COUNTER}, 201)
    before = table_snapshot(engine)
    repeat = identify(client, MARTY, COUNTER)
    assert repeat["ignored"] == [{"field": "phoneNumber", "reason": "generic"}]
    # Not retroactive: the contact that holds the phone keeps it.
    assert repeat["contact"] == held["contact"]
    assert table_snapshot(engine) == before


def test_a_repeat_of_a_held_pair_whose_value_is_now_blocked_reports_it_ignored(
    settings: Settings, client: FlaskClient, engine: Engine
) -> None:
    held = identify(client, MARTY, "5550155")
    with opened_app(make_settings(settings.database_url.get(), blocked_phones=r"555015\d")) as app:
        later = app.test_client()
        repeat = identify(later, MARTY, "5550155")
        assert repeat["ignored"] == [{"field": "phoneNumber", "reason": "blocked"}]
        assert repeat["contact"] == held["contact"]
        # Reads still find the person by the blocked value.
        persons = post(later, "/lookup", {"phoneNumber": "5550155"})["persons"]
        assert persons == [held["contact"]]


def test_lookup_still_finds_by_a_generic_or_blocked_value(client: FlaskClient) -> None:
    make_generic(client)
    (person,) = post(client, "/lookup", {"phoneNumber": COUNTER})["persons"]
    assert sorted(person["emails"]) == sorted(f"c{i}@shop.test" for i in range(THRESHOLD))
    # A blocked value nobody holds: found in no one, and no 422 for a read.
    assert post(client, "/lookup", {"phoneNumber": "0000000"}) == {"persons": []}


# --- Suppression (erasure with "suppress": true) -------------------------------------------


def test_a_suppressed_value_is_ignored_afterwards_and_reported_as_blocked(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, MARTY, "5550101")
    erased = post(client, "/erasures", {"email": MARTY, "suppress": True})
    assert erased["erased"]["contacts"] == 1
    assert get(client, "/guards")["suppressed"] == 1
    answer = identify(client, MARTY, "5550102")
    assert answer["ignored"] == [{"field": "email", "reason": "blocked"}]
    assert "suppress" not in json.dumps(answer)
    refused = identify(client, MARTY, None, status=422)
    assert refused["field"] == "email" and "suppress" not in refused["error"]
    assert MARTY not in stored_values(engine)


def test_suppress_without_the_hash_key_is_422(settings: Settings, engine: Engine) -> None:
    with opened_app(make_settings(settings.database_url.get())) as app:
        client = app.test_client()
        identify(client, MARTY, "5550101")
        refused = post(client, "/erasures", {"email": MARTY, "suppress": True}, 422)
        assert "SUPPRESSION_HASH_KEY" in refused["error"]
        assert MARTY in stored_values(engine)  # nothing erased either


# --- Access --------------------------------------------------------------------------------

READ, ADMIN = "read-key-guards", "admin-key-guards"


@pytest.fixture
def keyed(settings: Settings, engine: Engine) -> Iterator[Flask]:
    with opened_app(
        make_settings(
            settings.database_url.get(),
            api_keys=Secret(READ),
            admin_api_keys=Secret(ADMIN),
            suppression_hash_key=Secret(HASH_KEY),
        )
    ) as app:
        yield app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_read_key_lists_guards_but_cannot_change_them_or_erase(
    keyed: Flask, engine: Engine
) -> None:
    client = keyed.test_client()
    post(client, "/identify", {"email": MARTY, "phoneNumber": "5550101"}, headers=bearer(READ))
    assert get(client, "/guards", headers=bearer(READ))["generic"] == []
    refused = post(client, "/guards/generic", {"email": MARTY}, 403, headers=bearer(READ))
    assert "admin" in refused["error"]
    assert client.delete("/guards/generic/1", headers=bearer(READ)).status_code == 403
    post(client, "/erasures", {"email": MARTY, "suppress": True}, 403, headers=bearer(READ))
    assert post(client, "/guards/generic", {"email": MARTY}, 401)["error"]  # no key at all
    assert stored_values(engine) == {MARTY, "5550101"}
    guard = post(client, "/guards/generic", {"email": MARTY}, 201, headers=bearer(ADMIN))
    delete = client.delete(f"/guards/generic/{guard['guard']['id']}", headers=bearer(ADMIN))
    assert delete.status_code == 204


# --- Metrics -------------------------------------------------------------------------------


def counter(client: FlaskClient, name: str, **labels: str) -> float:
    scraped = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_count_ignored_values_by_field_and_reason_and_generic_marks(
    client: FlaskClient,
) -> None:
    ignored = "identity_ignored_values_total"

    def blocked_phones() -> float:
        return counter(client, ignored, field="phoneNumber", reason="blocked")

    def generic_phones() -> float:
        return counter(client, ignored, field="phoneNumber", reason="generic")

    before = (blocked_phones(), generic_phones(), counter(client, "identity_generic_marks_total"))
    identify(client, MARTY, "0000000")
    identify(client, None, "1111111", status=422)  # counted also when nothing is left
    make_generic(client)
    identify(client, "later@shop.test", COUNTER)
    assert blocked_phones() - before[0] == 2
    assert generic_phones() - before[1] == 2  # the crossing request and the later one
    assert counter(client, "identity_generic_marks_total") - before[2] == 1


# --- The counter phone (SPEC / issue 10 scenario) ------------------------------------------


@pytest.fixture
def default_threshold(settings: Settings, engine: Engine) -> Iterator[FlaskClient]:
    """The default GENERIC_THRESHOLD (20)."""
    with opened_app(make_settings(settings.database_url.get())) as app:
        yield app.test_client()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # ~10 s a backend
def test_500_checkouts_on_a_counter_phone_glue_at_most_21_contacts(
    default_threshold: FlaskClient, engine: Engine
) -> None:
    client = default_threshold
    emails = [f"shopper{i}@shop.test" for i in range(500)]
    answers = [identify(client, e, "+1 (555) 010-0999") for e in emails]
    phone = "+15550100999"
    glued = [a for a in answers if phone in a["contact"]["phoneNumbers"]]
    assert len(glued) == 20  # the 21st checkout crossed the threshold
    with engine.connect() as conn:
        holders = conn.execute(
            text("SELECT count(*) FROM contact WHERE deleted_at IS NULL AND phone_number = :p"),
            {"p": phone},
        ).scalar_one()
        persons = conn.execute(
            text("SELECT count(*) FROM contact WHERE deleted_at IS NULL AND linked_id IS NULL")
        ).scalar_one()
    assert holders <= 21
    assert persons == 1 + 480  # the glued 20 as one person, then one person a checkout
    (generic,) = get(client, "/guards")["generic"]
    assert (generic["field"], generic["value"], generic["partners"]) == ("phoneNumber", phone, 21)
    ignored = [{"field": "phoneNumber", "reason": "generic"}]
    assert all(a["ignored"] == ignored for a in answers[20:])
    # Every later checkout of an email that came after the mark: its own person.
    for email in emails[20:]:
        again = identify(client, email, "+15550100999")
        assert again["ignored"] == ignored
        assert again["contact"]["emails"] == [email]
        assert again["contact"]["phoneNumbers"] == []
        assert again["contact"]["secondaryContactIds"] == []
    # What the phone glued before the mark stays glued until the phone is erased.
    assert len(identify(client, emails[0], phone)["contact"]["emails"]) == 20
    post(client, "/erasures", {"phoneNumber": phone})
    for email in emails[:20]:
        alone = identify(client, email, phone)
        assert alone["contact"]["emails"] == [email]
        assert alone["ignored"] == [{"field": "phoneNumber", "reason": "blocked"}]
