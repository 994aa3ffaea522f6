"""Identity events (SPEC.md, "Asynchronous events"): validation, normalization and routing.

Pure functions over plain values. The HTTP entry point, the Python publisher and
the worker all parse events here, so an event means the same thing wherever it
enters; the worker parses again what it receives (a producer writing to Redis
directly is not trusted to have validated anything).
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
)

from identity.errors import InvalidInput
from identity.normalize import Identifiers, normalize_identifiers
from identity.validation import Body, EmailInput, PhoneInput, Refusal, check

MAX_EVENT_ID_LENGTH = 200
MAX_SOURCE_LENGTH = 200
#: Queue names are ``<prefix><partition>``: identity.p0, identity.p1, ...
QUEUE_PREFIX = "identity.p"
#: The one Celery task that applies events; its name is part of the wire contract.
APPLY_EVENTS_TASK = "identity.apply_events"


@dataclass(frozen=True)
class Event:
    """One validated, normalized identity event."""

    event_id: str
    identifiers: Identifiers
    occurred_at: datetime | None = None
    source: str | None = None
    #: when the service accepted it (inbox commit or publish): a value erased after this
    #: is dropped when the event is applied (SPEC "Erasure", events in flight)
    accepted_at: datetime | None = None

    @property
    def routing_key(self) -> str:
        """The normalized key that picks the partition: the email when present, else the phone."""
        if self.identifiers.email is not None:
            return "e:" + self.identifiers.email
        assert self.identifiers.phone is not None
        return "p:" + self.identifiers.phone

    def to_message(self) -> dict[str, Any]:
        """The JSON form carried in queue messages and dead letters (normalized values)."""
        return {
            "eventId": self.event_id,
            "email": self.identifiers.email,
            "phoneNumber": self.identifiers.phone,
            "occurredAt": self.occurred_at.isoformat() if self.occurred_at else None,
            "source": self.source,
            **({"acceptedAt": self.accepted_at.isoformat()} if self.accepted_at else {}),
        }


@dataclass(frozen=True)
class ItemError:
    """Why one item of a batch was refused."""

    index: int
    message: str
    field: str | None = None

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"index": self.index, "error": self.message}
        if self.field:
            body["field"] = self.field
        return body


class InvalidEvents(InvalidInput):
    """At least one event of a batch is invalid; nothing of the batch is accepted."""

    code = "invalid_events"

    def __init__(self, errors: Sequence[ItemError], total: int) -> None:
        super().__init__(f"{len(errors)} of {total} event(s) are invalid; none was accepted")
        self.errors = tuple(errors)


def _event_id(value: str | None) -> str | None:
    if value is None:
        return None
    event_id = value.strip()
    if not event_id:
        raise ValueError("eventId must not be empty")
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise ValueError(f"eventId is longer than {MAX_EVENT_ID_LENGTH} characters")
    if not event_id.isprintable():
        raise ValueError("eventId must hold printable characters only")
    return event_id


def _moment(value: object, info: ValidationInfo) -> object:
    """An ISO-8601 string with a timezone, as a datetime (a number is not a moment)."""
    if value is None or isinstance(value, datetime):
        return value
    name = info.field_name
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO-8601 string or absent")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{name} must be an ISO-8601 timestamp, e.g. 2024-05-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} must carry a timezone (Z or an offset such as +02:00)")
    return moment


def _source(value: str | None) -> str | None:
    source = (value or "").strip()
    if len(source) > MAX_SOURCE_LENGTH:
        raise ValueError(f"source is longer than {MAX_SOURCE_LENGTH} characters")
    return source or None


Moment = Annotated[datetime | None, BeforeValidator(_moment)]


class EventBody(Body):
    """One identity event; validated and normalized like /identify (at least one of email
    and phoneNumber)."""

    model_config = ConfigDict(title="Event")

    eventId: Annotated[
        StrictStr | None,
        Refusal("eventId must be a string or absent"),
        AfterValidator(_event_id),
        Field(description="Idempotency key (1-200 printable characters); assigned (uuid4) "
              "when absent. An event with a known eventId has no second effect."),
    ] = None  # fmt: skip
    email: EmailInput = None
    phoneNumber: PhoneInput = None
    occurredAt: Annotated[Moment, Field(description="ISO-8601 timestamp with a timezone.")] = None
    source: Annotated[
        StrictStr | None,
        Refusal("source must be a string or absent"),
        AfterValidator(_source),
        Field(description="Free text up to 200 characters, e.g. the producing system."),
    ] = None


class QueuedEvent(EventBody):
    """An event as this service writes it to a queue: it may carry ``acceptedAt``."""

    acceptedAt: Moment = None


def parse_event(
    item: object, default_region: str | None = None, *, internal: bool = False
) -> Event:
    """Validate and normalize one event; a missing eventId gets a fresh uuid4.

    ``internal``: a queue message written by this service, which may carry ``acceptedAt``
    (producers may not set it).
    """
    body = check(QueuedEvent if internal else EventBody, item, what="an event")
    return Event(
        event_id=body.eventId or str(uuid.uuid4()),
        identifiers=normalize_identifiers(body.email, body.phoneNumber, default_region),
        occurred_at=body.occurredAt,
        source=body.source,
        accepted_at=body.acceptedAt if isinstance(body, QueuedEvent) else None,
    )


def parse_events(
    items: Sequence[object], default_region: str | None = None, *, limit: int
) -> list[Event]:
    """Validate a whole batch: every item, or :class:`InvalidEvents` naming each bad one."""
    if not items:
        raise InvalidInput("the batch is empty: send one event or an array of 1 or more")
    if len(items) > limit:
        raise InvalidInput(f"the batch has {len(items)} events; the limit is {limit}")
    events: list[Event] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        try:
            events.append(parse_event(item, default_region))
        except InvalidInput as error:
            errors.append(ItemError(index, error.message, error.field))
    if errors:
        raise InvalidEvents(errors, len(items))
    return events


def partition_for(routing_key: str, partitions: int) -> int:
    """Stable partition of a normalized routing key: CRC-32 of its UTF-8 bytes, modulo N.

    CRC-32 (not Python's salted ``hash()``) gives the same answer in every process,
    release and language, so any producer can compute it.
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    return zlib.crc32(routing_key.encode("utf-8")) % partitions


def queue_name(partition: int) -> str:
    return f"{QUEUE_PREFIX}{partition}"


def split_by_partition(events: Sequence[Event], partitions: int) -> dict[int, list[Event]]:
    """Group events by partition, keeping their order within each partition."""
    groups: dict[int, list[Event]] = {}
    for event in events:
        groups.setdefault(partition_for(event.routing_key, partitions), []).append(event)
    return groups
