"""POST /events without Redis (the embedded default): validated like /identify, applied
in-process, answered 202; bad batches are refused whole with per-item errors."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api import create_app
from identity.settings import Settings


def contacts(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT email, phone_number, link_precedence FROM contact ORDER BY id")
        )
        return [tuple(r) for r in rows]


def test_one_event_is_applied_in_process_and_gets_an_id(
    client: FlaskClient, engine: Engine
) -> None:
    response = client.post("/events", json={"email": " Doc@HillValley.edu ", "phoneNumber": 1985})
    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted"] == 1 and body["status"] == "applied"
    assert UUID(body["eventIds"][0]).version == 4
    assert contacts(engine) == [("doc@hillvalley.edu", "1985", "primary")]


def test_a_batch_applies_in_order_with_the_rules_of_identify(
    client: FlaskClient, engine: Engine
) -> None:
    batch = [
        {"eventId": "a", "email": "george@hillvalley.edu", "phoneNumber": "919191"},
        {"eventId": "b", "email": "biffsucks@hillvalley.edu", "phoneNumber": "717171",
         "occurredAt": "2024-05-01T12:00:00Z", "source": "checkout"},
        {"eventId": "c", "email": "george@hillvalley.edu", "phoneNumber": "717171"},
    ]  # fmt: skip
    response = client.post("/events", json=batch)
    assert response.status_code == 202
    assert response.get_json()["eventIds"] == ["a", "b", "c"]
    assert contacts(engine) == [
        ("george@hillvalley.edu", "919191", "primary"),
        ("biffsucks@hillvalley.edu", "717171", "secondary"),
    ]
    again = client.post("/events", json=batch[2])  # the same eventId: no second effect
    assert again.status_code == 202
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM processed_event")).scalar_one() == 3


def test_a_bad_item_rejects_the_whole_batch_with_per_item_errors(
    client: FlaskClient, engine: Engine
) -> None:
    batch = [
        {"email": "ok@hillvalley.edu"},
        {"email": "not-an-address"},
        {"phoneNumber": True},
        {},
        {"email": "x@y.z", "occurredAt": "yesterday"},
        {"email": "x@y.z", "occurredAt": "2024-05-01T12:00:00"},
        {"email": "x@y.z", "colour": "red"},
        "a string",
        {"eventId": 7, "email": "x@y.z"},
    ]
    response = client.post("/events", json=batch)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "8 of 9 event(s) are invalid; none was accepted"
    fields = [(e["index"], e.get("field")) for e in body["errors"]]
    assert fields == [
        (1, "email"),
        (2, "phoneNumber"),
        (3, None),
        (4, "occurredAt"),
        (5, "occurredAt"),
        (6, "colour"),
        (7, None),
        (8, "eventId"),
    ]
    assert all(isinstance(e["error"], str) and e["error"] for e in body["errors"])
    assert contacts(engine) == []  # not even the good first item


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ([], 400, "empty"),
        (42, 400, "an event object or an array"),
        ("text", 400, "an event object or an array"),
    ],
)
def test_bodies_that_are_not_events_are_refused(
    client: FlaskClient, body: object, status: int, fragment: str
) -> None:
    response = client.post("/events", json=body)
    assert response.status_code == status
    assert fragment in response.get_json()["error"]


def test_wrong_content_type_and_broken_json_are_refused(client: FlaskClient) -> None:
    assert client.post("/events", data="{}", content_type="text/plain").status_code == 415
    broken = client.post("/events", data="[{", content_type="application/json")
    assert broken.status_code == 400 and "not valid JSON" in broken.get_json()["error"]


@pytest.fixture
def small_app(settings: Settings, engine: Engine) -> Iterator[Flask]:
    app = create_app(
        Settings(database_url=settings.database_url, events_max_batch=3, events_max_body_bytes=2048)
    )
    yield app
    app.extensions["identity.engine"].dispose()


def test_batch_and_body_limits(small_app: Flask) -> None:
    client = small_app.test_client()
    four = [{"email": f"u{i}@x.io"} for i in range(4)]
    over = client.post("/events", json=four)
    assert over.status_code == 400 and "limit is 3" in over.get_json()["error"]
    huge = client.post("/events", json=[{"email": "u@x.io", "source": "s" * 3000}])
    assert huge.status_code == 413


def test_events_bodies_may_be_larger_than_identify_bodies(client: FlaskClient) -> None:
    batch = [{"eventId": f"big-{i:04d}", "email": f"user{i:04d}@shop.test",
              "phoneNumber": f"+4420{i:07d}"} for i in range(1000)]  # fmt: skip
    response = client.post("/events", json=batch)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["accepted"] == 1000


def test_queues_in_process_mode(client: FlaskClient) -> None:
    body = client.get("/queues").get_json()
    assert body == {
        "mode": "in-process",
        "partitions": 4,
        "queues": [],
        "inboxPending": 0,
        "deadLetters": 0,
    }
