"""The change feed published to the Redis Stream ``identity:changes`` by the real relay
(SPEC.md, "History and the change feed": the same changes, in the same order, at least
once), with events applied by a real Celery worker and /identify through the Flask app on
the same PostgreSQL database and a private Redis (tests/integration/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_client
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.settings import Settings
from tests.conftest import opened_app
from tests.support.async_stack import AsyncStack, RedisServer, wait_applied, wait_until
from tests.support.graph import live_primaries, replay
from worker.changes_stream import ChangeStream

pytestmark = pytest.mark.slow

STREAM = "identity:changes"
# Phones with a leading + and eight digits or more, so that none can be part of a
# timestamp, a seq or an id by chance: finding one in an entry means a value leaked.
GEORGE, BIFF, MARTY = "george@hillvalley.edu", "biffsucks@hillvalley.edu", "marty@hillvalley.edu"
P1, P2, P3, P4 = "+35191919191", "+35171717171", "+35155500011", "+35155500022"
SENT = [GEORGE, BIFF, MARTY, "doc@lyon.estates", "jennifer@hillvalley.edu", P1, P2, P3, P4]


@pytest.fixture
def queued_app(queued_settings: Settings, pg: Engine) -> Iterator[Flask]:
    with opened_app(queued_settings) as app:
        yield app


@pytest.fixture
def stream(redis: RedisServer, pg: Engine) -> Iterator[redis_client.Redis]:
    """The stream, emptied once the tables are (a test before may have filled both)."""
    client = redis_client.Redis.from_url(redis.url)
    client.delete(STREAM)
    yield client
    client.close()


def identify(client: FlaskClient, email: str | None, phone: str | None, request_id: str) -> None:
    response = client.post(
        "/identify",
        json={"email": email, "phoneNumber": phone},
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def count_changes(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM change")).scalar_one())


def wait_published(stream: redis_client.Redis, engine: Engine, stack: AsyncStack) -> int:
    """Until the stream holds as many entries as there are changes; returns that number."""
    try:
        wait_until(
            lambda: stream.xlen(STREAM) == count_changes(engine),
            timeout_s=60,
            interval_s=0.1,
            what="the relay to publish every change",
        )
    except AssertionError:
        raise AssertionError(f"not every change was published\n{stack.logs()}") from None
    return count_changes(engine)


def decoded(entries: list[Any]) -> list[tuple[str, dict[str, str]]]:
    return [
        (entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
        for entry_id, fields in entries
    ]


def as_feed(fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry in the shape of GET /changes."""
    return {
        "seq": int(fields["seq"]),
        "kind": fields["kind"],
        "at": fields["at"],
        "cause": fields["cause"] or None,
        "payload": json.loads(fields["payload"]),
    }


def test_the_relay_publishes_every_change_once_in_seq_order_without_values(
    stack: AsyncStack,
    pg: Engine,
    stream: redis_client.Redis,
    queued_app: Flask,
    queued_settings: Settings,
) -> None:
    client = queued_app.test_client()
    identify(client, GEORGE, P1, "req-1")  # person.created 1
    identify(client, BIFF, P2, "req-2")  # person.created 2
    identify(client, GEORGE, P2, "req-3")  # person.merged: 2 under 1 (and a link)
    identify(client, MARTY, P1, "req-4")  # contact.added 3
    events = [
        {"eventId": "ev-doc", "email": "doc@lyon.estates", "phoneNumber": P3},
        {"eventId": "ev-jennifer", "email": "jennifer@hillvalley.edu", "phoneNumber": P4},
        {"eventId": "ev-glue", "email": "doc@lyon.estates", "phoneNumber": P4},
        {"eventId": "ev-join", "email": MARTY, "phoneNumber": P3},
    ]
    response = client.post("/events", json=events)
    assert response.status_code == 202, response.get_data(as_text=True)
    wait_applied(pg, {e["eventId"] for e in events}, stack)

    total = wait_published(stream, pg, stack)
    entries = decoded(stream.xrange(STREAM))
    feed = client.get("/changes?limit=1000").get_json()["changes"]
    assert len(feed) == total >= 8
    assert [entry_id for entry_id, _ in entries] == [f"{n}-0" for n in range(1, total + 1)]
    assert [as_feed(fields) for _, fields in entries] == feed  # same changes, same order
    causes = [c["cause"] for c in feed]
    assert causes[:4] == ["req-1", "req-2", "req-3", "req-4"]
    assert set(causes[4:]) <= {e["eventId"] for e in events}
    kinds = [c["kind"] for c in feed]
    assert kinds.count("person.merged") >= 2  # the request's merge and the events' merges
    with pg.connect() as conn:
        assert replay(feed) == live_primaries(conn)
    raw = json.dumps([fields for _, fields in entries])
    leaked = [value for value in SENT if value in raw or value.lstrip("+") in raw]
    assert not leaked, f"values in the stream: {leaked}"

    # Publishing again adds nothing: the relay's cursor is the stream's last id...
    publisher = ChangeStream(queued_settings, pg)
    try:
        assert publisher.publish_once() == 0
        # ...and even a relay that lost it (it republishes from the start, as one that
        # died between XADD and its next round would) is refused entry by entry.
        publisher.last_published = lambda: 0  # type: ignore[method-assign]
        assert publisher.publish_once() == total  # it tried them all
    finally:
        publisher.close()
    assert decoded(stream.xrange(STREAM)) == entries

    # The stream goes on where it was: new changes after the republish are published next.
    identify(client, "einstein@lyon.estates", "+35155500033", "req-5")
    total_after = wait_published(stream, pg, stack)
    assert total_after == total + 1
    last_id, last = decoded(stream.xrange(STREAM, min=f"{total + 1}-0"))[0]
    assert last_id == f"{total + 1}-0"
    assert (last["kind"], last["cause"]) == ("person.created", "req-5")
