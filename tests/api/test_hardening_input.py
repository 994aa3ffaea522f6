"""Hostile and unusual input (issue 5), beyond tests/api/test_bad_input.py: international
addresses, SQL metacharacters, very long strings, integers past 64 bits, on both backends.
Each either round-trips exactly or is a clear JSON 4xx that writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.invariants import check_invariants


def identify(client: FlaskClient, **body: Any) -> Any:
    return client.post("/identify", json=body)


def assert_4xx(response: Any, status: int = 400, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert isinstance(body["error"], str) and 0 < len(body["error"]) <= 300
    if field:
        assert body.get("field") == field


def rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT id, email, phone_number FROM contact"))]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("JOSÉ@Exämple.COM", "josé@exämple.com"),
        ("用户@例子.广告", "用户@例子.广告"),
        ("ΑΣΔ@παράδειγμα.δοκιμή", "ασδ@παράδειγμα.δοκιμή"),
        ("  Ünïcödé+tag@bücher.de  ", "ünïcödé+tag@bücher.de"),
    ],
)
def test_international_emails_round_trip_normalized(
    client: FlaskClient, engine: Engine, sent: str, stored: str
) -> None:
    first = identify(client, email=sent)
    assert first.status_code == 200
    assert first.get_json()["contact"]["emails"] == [stored]
    again = identify(client, email=stored)  # the normalized form finds the same person
    assert (
        again.get_json()["contact"]["primaryContactId"]
        == first.get_json()["contact"]["primaryContactId"]
    )
    assert rows(engine) == [(1, stored, None)]


def test_lookalike_addresses_stay_distinct(client: FlaskClient, engine: Engine) -> None:
    latin = identify(client, email="paypal@shop.test").get_json()["contact"]
    cyrillic = identify(client, email="раypal@shop.test").get_json()["contact"]  # Cyrillic р, а
    assert latin["primaryContactId"] != cyrillic["primaryContactId"]


SQLISH = [
    "o'brien@shop.test",
    "x'--@shop.test",
    "a%_*@shop.test",
    "bobby'or'1'='1@shop.test",
    "$$@shop.test",
]


def test_sql_metacharacters_are_data(client: FlaskClient, engine: Engine) -> None:
    for i, email in enumerate(SQLISH):
        response = identify(client, email=email, phoneNumber=f"900{i}")
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["contact"]["emails"] == [email]
    # Each is its own person (no LIKE-style matching), the table is intact, nothing else changed.
    assert sorted(r[1] for r in rows(engine)) == sorted(SQLISH)
    assert identify(client, email="a%_*@shop.test").get_json()["contact"]["phoneNumbers"] == [
        "9002"
    ]
    with engine.connect() as conn:
        assert check_invariants(conn) == []


@pytest.mark.parametrize(
    "raw",
    ["123'; DROP TABLE contact; --", "1 OR 1=1", "555\x00123", "12%34", "(555) 123-4567 ext 9"],
)
def test_sql_in_phone_numbers_is_refused(client: FlaskClient, engine: Engine, raw: str) -> None:
    assert_4xx(identify(client, phoneNumber=raw), field="phoneNumber")
    assert rows(engine) == []


def test_very_long_strings(client: FlaskClient, engine: Engine) -> None:
    local64 = "l" * 64
    domain = ".".join(["d" * 60] * 3) + ".example"  # 190 characters
    longest = f"{local64}@{domain}"[:254]
    assert identify(client, email=longest).status_code == 200
    assert_4xx(identify(client, email="l" * 65 + "@shop.test"), field="email")
    assert_4xx(identify(client, email="a@" + "d" * 260 + ".com"), field="email")
    assert_4xx(identify(client, phoneNumber="1" * 21), field="phoneNumber")
    assert_4xx(identify(client, phoneNumber="1-" * 5000), field="phoneNumber")
    assert_4xx(identify(client, email="x" * 60_000))  # under the body limit, over every field limit
    # An unknown field with a huge name: refused as unknown, by name.
    response = client.post("/identify", json={"k" * 30_000: 1})
    assert response.status_code == 400 and "unknown field" in response.get_json()["error"]
    assert rows(engine) == [(1, longest, None)]


@pytest.mark.parametrize(
    ("number", "ok"),
    [
        (2**31, True),
        (2**63 - 1, True),
        (2**63, True),  # past a signed 64-bit column: stored as text, never overflows
        (2**64, True),
        (10**19, True),  # 20 digits: the longest allowed
        (10**20, False),  # 21 digits
        (2**128, False),
        (-(2**63), False),
        (-1, False),
    ],
)
def test_phone_numbers_beyond_64_bits(
    client: FlaskClient, engine: Engine, number: int, ok: bool
) -> None:
    response = identify(client, phoneNumber=number)
    if ok:
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["contact"]["phoneNumbers"] == [str(number)]
        assert rows(engine) == [(1, None, str(number))]
    else:
        assert_4xx(response, field="phoneNumber")
        assert rows(engine) == []


@pytest.mark.parametrize("value", [1.5, 1e3, 123456.0, True, [123456], {"n": 123456}])
def test_phone_numbers_of_the_wrong_json_type(
    client: FlaskClient, engine: Engine, value: Any
) -> None:
    assert_4xx(identify(client, phoneNumber=value), field="phoneNumber")
    assert rows(engine) == []


def test_hostile_events_are_refused_whole(client: FlaskClient, engine: Engine) -> None:
    batch = [
        {"eventId": "ok-1", "email": "josé@exämple.com", "source": "'; DROP TABLE contact; --"},
        {"eventId": "x" * 201, "email": "a@b.io"},
        {"eventId": "ok-3", "phoneNumber": 2**70},
        [{"email": "nested@array.io"}],
    ]
    response = client.post("/events", json=batch)
    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert [e["index"] for e in errors] == [1, 2, 3]
    assert rows(engine) == []
    # The valid one alone is accepted, metacharacters and all.
    assert client.post("/events", json=batch[:1]).status_code == 202
    assert rows(engine) == [(1, "josé@exämple.com", None)]
