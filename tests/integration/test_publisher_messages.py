"""What the publisher puts on a partition queue: the events in full for the worker, and
in the headers that task events (Flower) and worker logs show, a count, never an email
or a phone."""

from __future__ import annotations

import base64
import json

import redis as redis_lib

from identity.events.messages import Event, parse_event, queue_name
from identity.normalize import Identifiers
from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import RedisServer
from worker.publisher import Publisher


def _empty(server: RedisServer, partition: int) -> None:
    client = redis_lib.Redis.from_url(server.url)
    try:
        client.delete(queue_name(partition))
    finally:
        client.close()


def _queued(server: RedisServer, partition: int) -> list[dict[str, object]]:
    client = redis_lib.Redis.from_url(server.url)
    try:
        return [json.loads(raw) for raw in client.lrange(queue_name(partition), 0, -1)]
    finally:
        client.close()


def test_message_headers_name_a_count_and_no_value(redis: RedisServer) -> None:
    _empty(redis, 0)
    settings = make_settings("sqlite://", redis_url=Secret(redis.url), identity_partitions=1)
    events = [
        Event(
            event_id=f"pii-{i}", identifiers=Identifiers(f"private{i}@mail.test", f"55501{i:04d}")
        )
        for i in range(3)
    ]
    with Publisher(settings) as publisher:
        assert publisher.publish_events(events) == 1
    (message,) = _queued(redis, 0)
    headers = message["headers"]
    assert isinstance(headers, dict)
    assert headers["argsrepr"] == "[<3 events>]"
    assert headers["kwargsrepr"] == "{}"
    shown = json.dumps(headers)
    for event in events:
        assert event.identifiers.email not in shown
        assert str(event.identifiers.phone) not in shown
    # The body carries every event as the worker parses it, accepted at publish time.
    body = json.loads(base64.b64decode(str(message["body"])))
    (items,) = body[0]
    parsed = [parse_event(item, internal=True) for item in items]
    assert [(e.event_id, e.identifiers) for e in parsed] == [
        (e.event_id, e.identifiers) for e in events
    ]
    assert all(e.accepted_at is not None for e in parsed)
    assert len({e.accepted_at for e in parsed}) == 1


def test_an_event_accepted_earlier_keeps_its_time(redis: RedisServer) -> None:
    settings = make_settings("sqlite://", redis_url=Secret(redis.url), identity_partitions=1)
    _empty(redis, 0)
    earlier = parse_event(
        {"eventId": "old", "email": "a@b.test", "acceptedAt": "2026-01-02T03:04:05+00:00"},
        internal=True,
    )
    with Publisher(settings) as publisher:
        publisher.publish_events([earlier])
    (message,) = _queued(redis, 0)
    (items,) = json.loads(base64.b64decode(str(message["body"])))[0]
    assert items[0]["acceptedAt"] == "2026-01-02T03:04:05+00:00"
