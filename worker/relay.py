"""The relay: publishes accepted events from the inbox to the partition queues, and the
change feed to its Redis Stream (``worker.changes_stream``).

    python -m worker.relay

POST /events commits events to ``event_inbox`` and answers 202; this loop sends
them to Redis after that commit, in inbox order (so per-key order holds), many
events per message. It also re-drives: a row published more than
EVENTS_REDRIVE_AFTER_S ago and still in the inbox (its message was lost with a
Redis restart, or its worker was killed) is published again once its partition's
queue has drained; the ledger makes the second delivery harmless.

Run one relay. A second one waits on a PostgreSQL advisory lock and takes over when
the first goes away.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from identity.events.messages import partition_for
from identity.events.services import claim_stale, claim_unpublished, mark_published
from identity.guards.policy import GuardPolicy
from identity.guards.store import prune_erased
from identity.logs import configure_logging
from identity.settings import Settings
from identity.storage.db import create_db_engine, run_in_transaction
from identity.storage.locking import advisory_key
from worker.changes_stream import ChangeStream
from worker.publisher import Publisher

log = logging.getLogger("worker.relay")

CLAIM_LIMIT = 5000
PRUNE_EVERY_S = 3600.0
IDLE_SLEEP_S = 0.05
ERROR_SLEEP_S = 1.0


def relay_once(engine: Engine, publisher: Publisher) -> int:
    """Publish the oldest unpublished inbox rows; returns how many."""

    def work(conn: Connection) -> int:
        rows = claim_unpublished(conn, limit=CLAIM_LIMIT)
        if rows:
            # Inside the transaction: if Redis refuses, the rows stay unpublished.
            publisher.publish_events([r.event for r in rows])
            mark_published(conn, [r.seq for r in rows])
        return len(rows)

    return run_in_transaction(engine, work)


def redrive_once(engine: Engine, publisher: Publisher, settings: Settings) -> int:
    """Republish stale rows of partitions whose queue is empty; returns how many."""
    idle = {p for p, depth in publisher.queue_depths().items() if depth == 0}
    if not idle:
        return 0

    def work(conn: Connection) -> int:
        rows = claim_stale(conn, older_than_s=settings.events_redrive_after_s, limit=CLAIM_LIMIT)
        rows = [r for r in rows if partition_for(r.event.routing_key, publisher.partitions) in idle]
        if rows:
            log.warning("re-driving %d event(s) still unapplied after publish", len(rows))
            publisher.publish_events([r.event for r in rows])
            mark_published(conn, [r.seq for r in rows])
        return len(rows)

    return run_in_transaction(engine, work)


class Relay:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_db_engine(settings, pool_size=2, max_overflow=0)
        self.publisher = Publisher(settings)
        self.changes = ChangeStream(settings, self.engine)
        self.policy = GuardPolicy.from_settings(settings)
        self.stopping = False
        self._leader: Connection | None = None

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def _lead(self) -> None:
        """Wait to be the one active relay (session advisory lock; freed if we die)."""
        if self.engine.dialect.name != "postgresql":
            return
        self._leader = self.engine.connect()
        key = advisory_key("identity.relay")
        while not self.stopping:
            if self._leader.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                self._leader.commit()
                return
            self._leader.rollback()
            time.sleep(ERROR_SLEEP_S)

    def run(self) -> None:
        self._lead()
        log.info("relay: publishing the inbox to %d partition(s)", self.publisher.partitions)
        redrive_every = max(0.5, self.settings.events_redrive_after_s / 4)
        next_redrive = time.monotonic() + redrive_every
        next_prune = time.monotonic()
        while not self.stopping:
            try:
                sent = relay_once(self.engine, self.publisher)
                sent += self.changes.publish_once()
                if time.monotonic() >= next_redrive:
                    next_redrive = time.monotonic() + redrive_every
                    redrive_once(self.engine, self.publisher, self.settings)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    if pruned := self.changes.prune():
                        log.info("relay: pruned %d change(s) past retention", pruned)
                    if forgotten := run_in_transaction(
                        self.engine, lambda conn: prune_erased(conn, self.policy)
                    ):
                        log.info("relay: forgot %d erased value hash(es) past retention", forgotten)
            except Exception as error:  # Redis or the database away: keep trying
                log.warning("relay: %s: %s; retrying", type(error).__name__, error)
                time.sleep(ERROR_SLEEP_S)
                continue
            if not sent:
                time.sleep(IDLE_SLEEP_S)
        self.close()

    def close(self) -> None:
        if self._leader is not None:
            self._leader.close()
        self.publisher.close()
        self.changes.close()
        self.engine.dispose()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings)
    if not settings.redis_url:
        raise SystemExit("relay: REDIS_URL is not set; without it events are applied in-process")
    relay = Relay(settings)
    signal.signal(signal.SIGTERM, relay.stop)
    signal.signal(signal.SIGINT, relay.stop)
    relay.run()


if __name__ == "__main__":
    main()
