"""POST /identify through the Flask test client, on PostgreSQL and SQLite: SPEC.md's examples."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from api import create_app
from identity.normalize import normalize_identifiers
from identity.settings import Settings
from identity.storage.models import Contact
from tests.support.invariants import assert_consistent
from tests.support.rows import count_contacts, links, snapshot

LORRAINE = "lorraine@hillvalley.edu"
MCFLY = "mcfly@hillvalley.edu"
GEORGE = "george@hillvalley.edu"
BIFF = "biffsucks@hillvalley.edu"


def answer(primary: int, emails: list[str], phones: list[str], secondaries: list[int]) -> dict:
    return {
        "contact": {
            "primaryContactId": primary,
            "emails": emails,
            "phoneNumbers": phones,
            "secondaryContactIds": secondaries,
        }
    }


def identify(client: FlaskClient, body: dict[str, Any], region: str | None = None) -> dict:
    """POST, expect 200, and check the answer holds the request's own identifiers."""
    response = client.post("/identify", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    data = response.get_json()
    wanted = normalize_identifiers(body.get("email"), body.get("phoneNumber"), region)
    contact = data["contact"]
    if wanted.email is not None:
        assert wanted.email in contact["emails"]
    if wanted.phone is not None:
        assert wanted.phone in contact["phoneNumbers"]
    assert contact["primaryContactId"] not in contact["secondaryContactIds"]
    assert contact["secondaryContactIds"] == sorted(contact["secondaryContactIds"])
    return data  # type: ignore[no-any-return]


def test_worked_example_1_new_primary_then_secondary(client: FlaskClient, engine: Engine) -> None:
    first = identify(client, {"email": LORRAINE, "phoneNumber": "123456"})
    assert first == answer(1, [LORRAINE], ["123456"], [])
    second = identify(client, {"email": MCFLY, "phoneNumber": "123456"})
    expected = answer(1, [LORRAINE, MCFLY], ["123456"], [2])
    assert second == expected
    assert links(engine) == {1: (None, "primary"), 2: (1, "secondary")}

    before = snapshot(engine)
    assert len(before) == 2
    for body in (
        {"phoneNumber": "123456"},
        {"email": LORRAINE},
        {"email": MCFLY},
        {"email": MCFLY, "phoneNumber": None},
        {"email": LORRAINE, "phoneNumber": "123456"},  # the first request again
        {"email": MCFLY, "phoneNumber": "123456"},  # the second request again
    ):
        assert identify(client, body) == expected, body
        assert snapshot(engine) == before, f"{body} wrote to the table"
    with engine.connect() as conn:
        assert_consistent(conn, [(LORRAINE, "123456"), (MCFLY, "123456")])


def test_worked_example_2_merge_of_two_primaries(client: FlaskClient, engine: Engine) -> None:
    assert identify(client, {"email": GEORGE, "phoneNumber": "919191"}) == answer(
        1, [GEORGE], ["919191"], []
    )
    assert identify(client, {"email": BIFF, "phoneNumber": "717171"}) == answer(
        2, [BIFF], ["717171"], []
    )
    merged = identify(client, {"email": GEORGE, "phoneNumber": "717171"})
    assert merged == answer(1, [GEORGE, BIFF], ["919191", "717171"], [2])
    # Rule 3: no new row when the request brings nothing new; 2 now points at 1.
    assert count_contacts(engine) == 2
    assert links(engine) == {1: (None, "primary"), 2: (1, "secondary")}
    before = snapshot(engine)
    for body in (
        {"email": BIFF},
        {"phoneNumber": 919191},
        {"email": GEORGE, "phoneNumber": "717171"},
    ):
        assert identify(client, body) == merged
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert_consistent(conn, [(GEORGE, "919191"), (BIFF, "717171"), (GEORGE, "717171")])


def test_merge_repoints_the_losers_secondaries_one_level_deep(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, {"email": "a@x.io", "phoneNumber": "111"})  # 1
    identify(client, {"email": "b@x.io", "phoneNumber": "222"})  # 2
    identify(client, {"email": "c@x.io", "phoneNumber": "222"})  # 3 -> 2
    identify(client, {"email": "b@x.io", "phoneNumber": "333"})  # 4 -> 2
    assert links(engine)[3] == (2, "secondary")
    merged = identify(client, {"email": "c@x.io", "phoneNumber": "111"})
    assert merged == answer(1, ["a@x.io", "b@x.io", "c@x.io"], ["111", "222", "333"], [2, 3, 4])
    # Every row of the newer cluster points straight at the winner: never a chain.
    assert links(engine) == {
        1: (None, "primary"),
        2: (1, "secondary"),
        3: (1, "secondary"),
        4: (1, "secondary"),
    }
    assert count_contacts(engine) == 4


def test_merge_that_also_brings_nothing_new_keeps_the_older_primary_whatever_the_order(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, {"phoneNumber": "555"})  # 1, phone only
    identify(client, {"email": "z@x.io"})  # 2, email only
    # The email is in the newer cluster and the phone in the older: 1 still wins.
    assert identify(client, {"email": "z@x.io", "phoneNumber": "555"}) == answer(
        1, ["z@x.io"], ["555"], [2]
    )
    assert count_contacts(engine) == 2
    assert links(engine) == {1: (None, "primary"), 2: (1, "secondary")}


def test_rule2_a_new_phone_for_a_known_email(client: FlaskClient, engine: Engine) -> None:
    identify(client, {"email": LORRAINE})
    assert identify(client, {"email": LORRAINE, "phoneNumber": "123456"}) == answer(
        1, [LORRAINE], ["123456"], [2]
    )
    assert snapshot(engine)[1][1:3] == (LORRAINE, "123456")  # the secondary holds both values


def test_phone_as_json_number_is_the_same_phone_as_the_string(
    client: FlaskClient, engine: Engine
) -> None:
    assert identify(client, {"email": LORRAINE, "phoneNumber": 123456}) == answer(
        1, [LORRAINE], ["123456"], []
    )
    assert identify(client, {"phoneNumber": "123456"}) == answer(1, [LORRAINE], ["123456"], [])
    assert identify(client, {"phoneNumber": "12-34-56"}) == answer(1, [LORRAINE], ["123456"], [])
    assert count_contacts(engine) == 1


def test_email_is_matched_after_trimming_and_lower_casing(
    client: FlaskClient, engine: Engine
) -> None:
    identify(client, {"email": LORRAINE, "phoneNumber": "123456"})
    data = identify(client, {"email": "  Lorraine@HillValley.EDU "})
    assert data == answer(1, [LORRAINE], ["123456"], [])
    assert count_contacts(engine) == 1


def test_null_and_blank_fields_count_as_absent(client: FlaskClient, engine: Engine) -> None:
    assert identify(client, {"email": LORRAINE, "phoneNumber": None}) == answer(
        1, [LORRAINE], [], []
    )
    assert identify(client, {"email": LORRAINE, "phoneNumber": "  "}) == answer(
        1, [LORRAINE], [], []
    )
    assert identify(client, {"email": "", "phoneNumber": "123"}) == answer(2, [], ["123"], [])
    assert count_contacts(engine) == 2


def test_identical_request_twice_writes_one_row(client: FlaskClient, engine: Engine) -> None:
    body = {"email": "doc@brown.io", "phoneNumber": "555 0101"}
    assert identify(client, body) == identify(client, body)
    assert count_contacts(engine) == 1


def test_soft_deleted_rows_take_part_in_nothing(client: FlaskClient, engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Contact.__table__).values(  # type: ignore[arg-type]
                email=LORRAINE,
                phone_number="123456",
                linked_id=None,
                link_precedence="primary",
                created_at=now,
                updated_at=now,
                deleted_at=now,
            )
        )
    # The deleted row (id 1) matches nothing: a new primary, and it is not in the answer.
    assert identify(client, {"email": LORRAINE, "phoneNumber": "123456"}) == answer(
        2, [LORRAINE], ["123456"], []
    )
    assert identify(client, {"email": MCFLY, "phoneNumber": "123456"}) == answer(
        2, [LORRAINE, MCFLY], ["123456"], [3]
    )
    assert count_contacts(engine) == 3


@pytest.fixture
def us_client(settings: Settings, engine: Engine) -> Iterator[FlaskClient]:
    app: Flask = create_app(settings.model_copy(update={"default_phone_region": "US"}))
    yield app.test_client()
    app.extensions["identity.engine"].dispose()


def test_default_region_stores_e164_and_matches_every_spelling(
    us_client: FlaskClient, engine: Engine
) -> None:
    first = identify(
        us_client, {"email": "marty@hillvalley.edu", "phoneNumber": "(415) 555-2671"}, "US"
    )
    assert first == answer(1, ["marty@hillvalley.edu"], ["+14155552671"], [])
    for spelling in ("+1 415 555 2671", "415.555.2671", 4155552671):
        data = identify(us_client, {"phoneNumber": spelling}, "US")
        assert data == first
    # Not valid for the region: kept as typed, so short test numbers keep working.
    assert identify(us_client, {"phoneNumber": "123456"}, "US") == answer(2, [], ["123456"], [])
    assert count_contacts(engine) == 2


def test_healthz(client: FlaskClient, backend: str) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"status": "ok", "database": backend}
