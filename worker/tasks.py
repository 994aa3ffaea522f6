"""The one task: apply a list of events (JSON objects) to the database.

Failure handling, in order (docs/ASYNC.md, "Dead letters"):
- an item that does not validate is dead-lettered at once (retrying cannot fix it);
- the database unreachable or contended past every retry (``Unavailable``): the
  whole message is retried later; what it already applied is skipped by the ledger;
- anything else fails the chunk: its events are then applied one by one, so only the
  event that keeps failing is dead-lettered and the partition keeps flowing;
- under partition ownership (worker/ownership.py), a transaction whose lease token is
  no longer current rolls back (``FenceLost``): the message goes back to the head of its
  queue for the new owner and is never acknowledged as applied here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Task
from sqlalchemy.engine import Connection

from identity.errors import InvalidInput, Unavailable
from identity.events.lease import FenceLost, check_fence
from identity.events.messages import APPLY_EVENTS_TASK, MAX_EVENT_ID_LENGTH, Event, parse_event
from identity.events.services import (
    MAX_EVENTS_PER_TRANSACTION,
    apply_events,
    chunked,
    record_dead_letter,
)
from identity.storage.db import run_in_transaction
from worker import ownership
from worker.app import app, args_repr, get_engine, get_policy
from worker.redis_client import redis_client

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


def _apply(conn: Connection, events: Sequence[Event], fence: tuple[int, int] | None) -> None:
    """Apply ``events``; under partition ownership, only if our lease token is still current.

    The fence is checked last, in the same transaction: the lease row stays locked
    FOR SHARE until the commit, so no takeover can slip in between (identity.events.lease).
    """
    apply_events(conn, events, get_policy())
    if fence is not None:
        check_fence(conn, *fence)


def _fence_of(task: Task) -> tuple[int, int] | None:
    """(partition, token) this message is applied under; None without ownership."""
    token = ownership.current_token()
    if token is None:
        return None
    routing_key = (task.request.delivery_info or {}).get("routing_key") or ""
    partition = ownership.partition_of_queue(
        routing_key, app.conf.identity_settings.identity_partitions
    )
    if partition is None:
        return None
    if token == ownership.NOT_OWNER:
        raise FenceLost(partition, token)
    return partition, token


def _give_back(task: Task, lost: FenceLost) -> None:
    """A message taken under a lease that is gone: its writes were refused (rolled back).

    Put it back at the head of its queue for the new owner (unless the new owner already
    did), and return only once the main process stopped consuming: acknowledging frees
    the prefetch slot, and it must not take another message of a partition it lost.
    """
    settings = app.conf.identity_settings
    log.warning("%s: writes refused by the fence; the message goes back to the owner", lost)
    queue = (task.request.delivery_info or {}).get("routing_key") or ""
    client = redis_client(settings, socket_timeout=5)
    try:
        tag = (task.request.properties or {}).get("delivery_tag")
        if tag:
            ownership.restore_unacked(client, queue, only_tag=str(tag))
    finally:
        client.close()
    ownership.wait_until_not_consuming(timeout_s=2.0 * settings.partition_lease_s)


def _apply_one_by_one(
    events: Sequence[Event], first_error: BaseException, fence: tuple[int, int] | None
) -> None:
    log.warning("batch of %d failed (%r): applying one by one", len(events), first_error)
    for event in events:
        error: BaseException | None = None
        for _ in range(SINGLE_EVENT_ATTEMPTS):
            try:
                run_in_transaction(get_engine(), lambda conn, e=event: _apply(conn, [e], fence))
            except (Unavailable, FenceLost):
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
        fence = _fence_of(self)
        for raw in items:
            try:
                valid.append(parse_event(raw, settings.default_phone_region, internal=True))
            except InvalidInput as error:
                _dead_letter(raw, f"invalid event: {error.message}")
        for chunk in chunked(valid, MAX_EVENTS_PER_TRANSACTION):
            try:
                run_in_transaction(
                    get_engine(),
                    lambda conn, c=chunk: _apply(conn, c, fence),
                    attempts=settings.db_retry_attempts,
                )
            except (Unavailable, FenceLost):
                raise
            except Exception as error:
                _apply_one_by_one(chunk, error, fence)
    except FenceLost as lost:
        _give_back(self, lost)
    except Unavailable as error:
        countdown = min(MAX_RETRY_COUNTDOWN_S, 2 ** min(self.request.retries, 6))
        log.warning("database unavailable (%s): retrying in %ss", error, countdown)
        # The retry is a new message: without its own argsrepr, Celery would show the events.
        raise self.retry(exc=error, countdown=countdown, **args_repr(len(items))) from None
