"""Redis Stream bridge for producers that are not Python and cannot call HTTP.

    python -m worker.stream_bridge

A producer appends to the stream ``identity:events`` with any Redis client:

    XADD identity:events * event '{"eventId": "o-42", "email": "a@b.c", "phoneNumber": "1"}'
    XADD identity:events * events '[{...}, {...}]'      (several at once)

The bridge reads with the consumer group ``identity-bridge``, validates, writes the
events to the inbox (and dead-letters what does not validate) in one PostgreSQL
transaction, and only then acknowledges and deletes the entries: from that commit
on, the events are as durable as a 202 of POST /events. Until then they are as
durable as Redis is (AOF in docker-compose.yml). A bridge that dies re-reads its
unacknowledged entries when it starts again; the ledger absorbs the repeat.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from typing import Any

import redis
from sqlalchemy.engine import Connection, Engine

from identity.errors import InvalidInput
from identity.events.messages import MAX_EVENT_ID_LENGTH, Event, parse_event
from identity.events.services import accept_events, record_dead_letter
from identity.logs import configure_logging
from identity.settings import Settings
from identity.storage.db import create_db_engine, run_in_transaction
from worker.redis_client import redis_client

log = logging.getLogger("worker.stream_bridge")

STREAM = "identity:events"
GROUP = "identity-bridge"
CONSUMER = "bridge"  # one bridge: a restarted one finds its own pending entries
READ_COUNT = 500
BLOCK_MS = 1000


def ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _items(fields: dict[bytes, bytes]) -> list[Any]:
    if b"events" in fields:
        items = json.loads(fields[b"events"])
        return items if isinstance(items, list) else [items]
    if b"event" in fields:
        return [json.loads(fields[b"event"])]
    raise ValueError("an entry needs a field 'event' (JSON object) or 'events' (JSON array)")


def _entry_id(raw: Any, entry: str) -> str:
    event_id = raw.get("eventId") if isinstance(raw, dict) else None
    if isinstance(event_id, str) and event_id.strip() and len(event_id) <= MAX_EVENT_ID_LENGTH:
        return event_id.strip()
    return f"stream-{entry}"


def bridge_once(client: redis.Redis, engine: Engine, settings: Settings) -> int:
    """Move one read of entries into the inbox; returns how many entries it handled."""
    # Our own unacknowledged entries first (left by a crash), then new ones.
    reply = client.xreadgroup(GROUP, CONSUMER, {STREAM: "0"}, count=READ_COUNT)
    if not reply or not reply[0][1]:
        reply = client.xreadgroup(GROUP, CONSUMER, {STREAM: ">"}, count=READ_COUNT, block=BLOCK_MS)
    entries = reply[0][1] if reply else []
    if not entries:
        return 0
    events: list[Event] = []
    bad: list[tuple[str, Any, str]] = []
    for entry_id, fields in entries:
        entry = entry_id.decode()
        try:
            items = _items(fields)
        except ValueError as error:  # includes JSON errors
            payload = {
                k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()
            }
            bad.append((f"stream-{entry}", payload, f"invalid entry: {error}"))
            continue
        for index, raw in enumerate(items):
            try:
                events.append(parse_event(raw, settings.default_phone_region))
            except InvalidInput as error:
                bad.append(
                    (_entry_id(raw, f"{entry}-{index}"), raw, f"invalid event: {error.message}")
                )

    def work(conn: Connection) -> None:
        if events:
            accept_events(conn, events)
        for event_id, payload, error in bad:
            record_dead_letter(conn, event_id=event_id, payload=payload, error=error)

    run_in_transaction(engine, work)
    ids = [entry_id for entry_id, _ in entries]
    client.xack(STREAM, GROUP, *ids)
    client.xdel(STREAM, *ids)
    return len(entries)


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings)
    if not settings.redis_url:
        raise SystemExit("stream bridge: REDIS_URL is not set")
    client = redis_client(settings, socket_timeout=10)
    engine = create_db_engine(settings, pool_size=1, max_overflow=0)
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("stream bridge: %s (group %s) -> event_inbox", STREAM, GROUP)
    while not stopping:
        try:
            ensure_group(client)
            bridge_once(client, engine, settings)
        except Exception as error:  # Redis or the database away: keep trying
            log.warning("stream bridge: %s: %s; retrying", type(error).__name__, error)
            time.sleep(1)
    engine.dispose()


if __name__ == "__main__":
    main()
