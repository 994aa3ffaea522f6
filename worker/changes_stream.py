"""Publish the change feed to a Redis Stream (default ``identity:changes``), in seq order.

Run by the relay (``worker.relay``) beside the inbox. Each change is added with the
stream id ``<seq>-0``, so the stream's order is the feed's order, a consumer can resume
from any seq with ``XREAD STREAMS identity:changes <seq>-0``, and a change published
twice (the relay died between XADD and its next round) is refused by Redis as an id not
above the last one: at least once from the relay's side, once in the stream.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from sqlalchemy.engine import Engine

from identity.feed import changes as feed
from identity.settings import Settings
from identity.storage.db import run_in_transaction, run_snapshot
from worker.redis_client import redis_client

log = logging.getLogger("worker.changes")

PAGE = 1000


class ChangeStream:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.stream = settings.changes_stream
        self.redis = redis_client(settings)

    def last_published(self) -> int:
        """The seq of the newest entry in the stream (0 when there is none)."""
        newest = self.redis.xrevrange(self.stream, count=1)
        if not newest:
            return 0
        entry_id = newest[0][0]
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return int(text.split("-", 1)[0])

    def publish_once(self) -> int:
        """Number what is committed, then publish what the stream lacks; returns how many."""
        if run_snapshot(self.engine, feed.has_pending):
            run_in_transaction(self.engine, feed.sequence_pending)
        after = self.last_published()
        try:
            page = run_snapshot(
                self.engine, lambda conn: feed.read_after(conn, after=after, limit=PAGE)
            )
        except feed.FeedGap as gap:
            # The stream is older than the feed's retention (Redis lost it, or the relay
            # was off for longer): go on from the oldest change kept, and say so.
            log.warning("changes stream behind retention: resuming at seq %d", gap.oldest_seq)
            start = gap.oldest_seq - 1
            page = run_snapshot(
                self.engine, lambda conn: feed.read_after(conn, after=start, limit=PAGE)
            )
        if not page:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for change in page:
            pipe.xadd(
                self.stream,
                {
                    "seq": str(change.seq),
                    "kind": change.kind,
                    "at": change.at.isoformat(),
                    "cause": change.cause or "",
                    "payload": json.dumps(change.payload, separators=(",", ":")),
                },
                id=f"{change.seq}-0",
                maxlen=self.settings.changes_stream_maxlen,
                approximate=True,
            )
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                raise result
        return len(page)

    def prune(self) -> int:
        """Delete changes older than CHANGES_RETENTION_DAYS (0 keeps them forever)."""
        days = self.settings.changes_retention_days
        if days <= 0:
            return 0
        older = timedelta(days=days)
        return run_in_transaction(self.engine, lambda conn: feed.prune(conn, older_than=older))

    def close(self) -> None:
        self.redis.close()
