"""The one task: apply a list of events (JSON objects) to the database.

Failure handling, in order (docs/ASYNC.md, "Dead letters"):
- an item that does not validate is dead-lettered at once (retrying cannot fix it);
- the database unreachable or contended past every retry (``Unavailable``): the
  whole message is retried later; what it already applied is skipped by the ledger;
- anything else fails the chunk: its events are then applied one by one, so only the
  event that keeps failing is dead-lettered and the partition keeps flowing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task

from identity.db import run_in_transaction
from identity.errors import InvalidInput, Unavailable
from identity.event_services import (
    MAX_EVENTS_PER_TRANSACTION,
    apply_events,
    chunked,
    record_dead_letter,
)
from identity.events import APPLY_EVENTS_TASK, MAX_EVENT_ID_LENGTH, Event, parse_event
from worker.app import app, get_engine, get_policy

log = logging.getLogger(__name__)

#: Tries of one event on its own before it is dead-lettered.
SINGLE_EVENT_ATTEMPTS = 2
MAX_RETRY_COUNTDOWN_S = 60


def _dead_letter_id(raw: Any) -> str:
    event_id = raw.get("eventId") if isinstance(raw, dict) else None
    if isinstance(event_id, str) and event_id.strip() and len(event_id) <= MAX_EVENT_ID_LENGTH:
        return event_id.strip()
    return f"unidentified-{uuid.uuid4()}"


def _dead_letter(raw: Any, error: str) -> None:
    event_id = _dead_letter_id(raw)
    log.warning("dead-lettering event %s: %s", event_id, error)
    run_in_transaction(
        get_engine(),
        lambda conn: record_dead_letter(conn, event_id=event_id, payload=raw, error=error),
    )


def _apply_one_by_one(events: Sequence[Event], first_error: BaseException) -> None:
    log.warning("batch of %d failed (%r): applying one by one", len(events), first_error)
    for event in events:
        error: BaseException | None = None
        for _ in range(SINGLE_EVENT_ATTEMPTS):
            try:
                run_in_transaction(
                    get_engine(), lambda conn, e=event: apply_events(conn, [e], get_policy())
                )
            except Unavailable:
                raise
            except Exception as failure:  # the poison: anything but unavailability
                error = failure
            else:
                error = None
                break
        if error is not None:
            _dead_letter(event.to_message(), f"{type(error).__name__}: {error}")


@app.task(
    name=APPLY_EVENTS_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=None,  # unavailability is waited out; nothing accepted is dropped
)
def apply_events_task(self: Task, events: Any) -> None:
    settings = app.conf.identity_settings
    items = events if isinstance(events, list) else [events]
    valid: list[Event] = []
    try:
        for raw in items:
            try:
                valid.append(parse_event(raw, settings.default_phone_region, internal=True))
            except InvalidInput as error:
                _dead_letter(raw, f"invalid event: {error.message}")
        for chunk in chunked(valid, MAX_EVENTS_PER_TRANSACTION):
            try:
                run_in_transaction(
                    get_engine(),
                    lambda conn, c=chunk: apply_events(conn, c, get_policy()),
                    attempts=settings.db_retry_attempts,
                )
            except Unavailable:
                raise
            except Exception as error:
                _apply_one_by_one(chunk, error)
    except Unavailable as error:
        countdown = min(MAX_RETRY_COUNTDOWN_S, 2 ** min(self.request.retries, 6))
        log.warning("database unavailable (%s): retrying in %ss", error, countdown)
        raise self.retry(exc=error, countdown=countdown) from None
