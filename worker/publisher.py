"""The Python publisher for checkout and order services.

    from worker.publisher import Publisher
    with Publisher.from_env() as publisher:           # REDIS_URL, IDENTITY_PARTITIONS
        ids = publisher.publish([{"email": "a@b.c", "phoneNumber": "123456"}, ...])

It validates every event first (a bad one raises ``InvalidEvents`` and nothing is
sent), routes each to its partition (crc32 of the normalized key) and packs many
events per message: a message costs the worker about the same whatever it carries.
What it publishes is as durable as Redis is (see docs/ASYNC.md); POST /events is
the path whose 202 survives the loss of Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from kombu.exceptions import ChannelError

from identity.events.messages import (
    APPLY_EVENTS_TASK,
    Event,
    parse_events,
    queue_name,
    split_by_partition,
)
from identity.events.services import MAX_EVENTS_PER_TRANSACTION, chunked
from identity.settings import Settings
from worker.app import PUBLISH_RETRY_POLICY, args_repr, create_celery

#: Events per message: one worker transaction's worth.
DEFAULT_EVENTS_PER_MESSAGE = MAX_EVENTS_PER_TRANSACTION


class Publisher:
    def __init__(self, settings: Settings, *, events_per_message: int | None = None) -> None:
        if not settings.redis_url:
            raise ValueError("Publisher needs REDIS_URL")
        self.settings = settings
        self.partitions = settings.identity_partitions
        self.events_per_message = events_per_message or DEFAULT_EVENTS_PER_MESSAGE
        self._celery = create_celery(settings)

    @classmethod
    def from_env(cls, **kwargs: Any) -> Publisher:
        return cls(Settings.from_env(), **kwargs)

    def publish(self, items: Iterable[Mapping[str, Any] | Event]) -> list[str]:
        """Validate, route and send events; returns their eventIds, in order."""
        raw = list(items)
        events = [e for e in raw if isinstance(e, Event)]
        if len(events) != len(raw):  # validate the plain ones, all or nothing
            events = parse_events(
                [e.to_message() if isinstance(e, Event) else e for e in raw],
                self.settings.default_phone_region,
                limit=max(len(raw), 1),
            )
        self.publish_events(events)
        return [e.event_id for e in events]

    def publish_events(self, events: Sequence[Event]) -> int:
        """Send already-validated events; returns the number of messages sent.

        Order is kept within each partition, hence for each key. Raises the broker's
        error when Redis stays unreachable past a short retry.
        """
        sent = 0
        # Accepted now, unless accepted before (the relay's inbox rows): a value erased
        # after this moment is dropped when the event is applied.
        now = datetime.now(UTC).isoformat()

        def message(event: Event) -> dict[str, Any]:
            body = event.to_message()
            body.setdefault("acceptedAt", now)
            return body

        with self._celery.producer_or_acquire() as producer:
            for partition, group in sorted(split_by_partition(events, self.partitions).items()):
                for chunk in chunked(group, self.events_per_message):
                    self._celery.send_task(
                        APPLY_EVENTS_TASK,
                        args=[[message(e) for e in chunk]],
                        **args_repr(len(chunk)),
                        queue=queue_name(partition),
                        producer=producer,
                        retry=True,
                        retry_policy=PUBLISH_RETRY_POLICY,
                    )
                    sent += 1
        return sent

    def queue_depths(self) -> dict[int, int]:
        """Messages waiting in each partition queue (not counting one being worked on)."""
        depths: dict[int, int] = {}
        with self._celery.connection_for_read() as conn:
            channel = conn.default_channel
            for partition in range(self.partitions):
                try:
                    depths[partition] = channel.queue_declare(
                        queue_name(partition), passive=True
                    ).message_count
                except ChannelError:  # Redis drops an empty list: no key, no messages
                    depths[partition] = 0
        return depths

    def close(self) -> None:
        self._celery.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
