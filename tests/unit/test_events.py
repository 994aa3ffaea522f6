"""Event parsing and routing: pure, no I/O."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from identity.errors import InvalidInput
from identity.events.messages import (
    Event,
    InvalidEvents,
    parse_event,
    parse_events,
    partition_for,
    queue_name,
    split_by_partition,
)
from identity.normalize import Identifiers


def test_partition_is_crc32_of_the_namespaced_key_and_stable() -> None:
    assert (
        partition_for("e:lorraine@hillvalley.edu", 4)
        == zlib.crc32(b"e:lorraine@hillvalley.edu") % 4
    )
    # Pinned values: any producer in any language computes the same (CRC-32, IEEE).
    assert zlib.crc32(b"e:lorraine@hillvalley.edu") == 0xC7EC4752
    assert partition_for("e:lorraine@hillvalley.edu", 4) == 2
    assert partition_for("p:123456", 4) == 3
    assert [partition_for(f"e:user{i}@x.io", 1) for i in range(5)] == [0] * 5
    with pytest.raises(ValueError):
        partition_for("e:a@b.c", 0)


def test_routing_key_is_the_email_when_present_else_the_phone() -> None:
    assert Event("1", Identifiers("a@b.c", "123")).routing_key == "e:a@b.c"
    assert Event("2", Identifiers(None, "123")).routing_key == "p:123"
    assert queue_name(3) == "identity.p3"


def test_parse_event_normalizes_and_keeps_metadata() -> None:
    event = parse_event(
        {"eventId": " x-1 ", "email": " A@B.C ", "phoneNumber": "(123) 456",
         "occurredAt": "2024-05-01T12:00:00+02:00", "source": " shop "}
    )  # fmt: skip
    assert event == Event(
        "x-1",
        Identifiers("a@b.c", "123456"),
        datetime(2024, 5, 1, 10, tzinfo=UTC).astimezone(timezone(timedelta(hours=2))),
        "shop",
    )
    assert event.to_message()["occurredAt"] == "2024-05-01T12:00:00+02:00"
    assert parse_event(event.to_message()) == event  # the wire form parses to itself


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"eventId": "", "email": "a@b.c"}, "eventId"),
        ({"eventId": "x" * 201, "email": "a@b.c"}, "eventId"),
        ({"eventId": "a\nb", "email": "a@b.c"}, "eventId"),
        ({"email": "a@b.c", "source": 5}, "source"),
        ({"email": "a@b.c", "occurredAt": 1714557600}, "occurredAt"),
        ({"email": None, "phoneNumber": None}, None),
    ],
)
def test_parse_event_refuses(item: dict[str, object], field: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_event(item)
    assert caught.value.field == field


def test_parse_events_reports_every_bad_item() -> None:
    with pytest.raises(InvalidEvents) as caught:
        parse_events([{"email": "a@b.c"}, {"email": "bad"}, 3], limit=10)
    assert [e.index for e in caught.value.errors] == [1, 2]


def test_split_by_partition_keeps_order_within_a_partition() -> None:
    events = [Event(str(i), Identifiers(f"k{i % 3}@x.io", None)) for i in range(12)]
    groups = split_by_partition(events, 2)
    assert {e.event_id for g in groups.values() for e in g} == {e.event_id for e in events}
    for group in groups.values():
        assert [int(e.event_id) for e in group] == sorted(int(e.event_id) for e in group)
    assert sum(len(g) for g in groups.values()) == 12
