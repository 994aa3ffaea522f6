"""Read-only work on a streaming replica while it is fresh, on the primary otherwise.

``DATABASE_REPLICA_URL`` names a PostgreSQL hot standby. :class:`ReadRoute` sends the
snapshot reads it is given there, unless the replica is more than
``REPLICA_MAX_LAG_MS`` behind or cannot be reached: then they run on the primary, and
the switch is said once in the log and every read it moves is counted
(``observe.REPLICA_FALLBACK``). Its state is checked at most once a second; a read that
fails on the replica marks it down at once and runs again on the primary, so a client
never sees the replica's failure. docs/OPERATIONS.md, "Read replicas".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity import observe
from identity.errors import Unavailable
from identity.storage.db import run_in_transaction, run_snapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

CHECK_EVERY_S = 1.0

#: Replay lag in milliseconds as the replica sees it. A replica that has replayed all it
#: received while its WAL receiver streams is caught up (0), however long ago the last
#: transaction was (an idle primary writes nothing to replay). One that lost its primary
#: ages from the last transaction it replayed. A database that is not in recovery (a
#: promoted replica) has no lag.
LAG_SQL = text(
    "SELECT CASE"
    " WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
    "  AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') THEN 0"
    " ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())"
    "  * 1000, 0) END"
)


class ReadRoute:
    """Where the read-only endpoints run: the replica while it is usable, else the primary."""

    def __init__(
        self,
        primary: Engine,
        replica: Engine | None,
        *,
        max_lag_ms: int,
        check_every_s: float = CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_ms = max_lag_ms
        self.check_every_s = check_every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._down_reason: str | None = None  # None: the replica serves
        # One consistent snapshot, as run_snapshot; a hot standby refuses writes by itself,
        # and would refuse the READ WRITE that resets a READ ONLY pooled connection.
        self._replica_snapshot = None
        if replica is not None:
            options: dict[str, object] = {"identity_snapshot": True}  # SQLite, in tests
            if replica.dialect.name == "postgresql":
                options = {"isolation_level": "REPEATABLE READ"}
            self._replica_snapshot = replica.execution_options(**options)

    def run(self, work: Callable[..., T]) -> T:
        """``work`` on one consistent snapshot (``run_snapshot``) of the chosen database."""
        reason = self._reason_not_to_use_replica()
        if reason is not None or self._replica_snapshot is None:
            if reason is not None:
                observe.emit(observe.REPLICA_FALLBACK, reason=reason)
            return run_snapshot(self.primary, work)
        try:
            return run_in_transaction(self._replica_snapshot, work)
        except Unavailable as error:
            # A snapshot read wrote nothing: run it again where it can be served.
            self._mark("unreachable", f"{error.reason}: {error.__cause__ or error}")
            observe.emit(observe.REPLICA_FALLBACK, reason="unreachable")
            return run_snapshot(self.primary, work)

    def _reason_not_to_use_replica(self) -> str | None:
        if self.replica is None:
            return None
        now = self.clock()
        if now >= self._next_check and self._lock.acquire(blocking=False):
            try:  # one request checks; the others go on with the last answer
                self._next_check = now + self.check_every_s
                self._check()
            finally:
                self._lock.release()
        return self._down_reason

    def _check(self) -> None:
        assert self.replica is not None
        try:
            with self.replica.connect() as conn:
                lag_ms = float(conn.execute(LAG_SQL).scalar_one())
        except Exception as error:  # unreachable, refused, timed out: the primary serves
            self._mark("unreachable", f"{type(error).__name__}: {error}")
            return
        if lag_ms > self.max_lag_ms:
            self._mark("lag", f"{lag_ms:.0f} ms behind (REPLICA_MAX_LAG_MS={self.max_lag_ms})")
        else:
            self._mark(None, f"{lag_ms:.0f} ms behind")

    def _mark(self, reason: str | None, detail: str) -> None:
        if reason == self._down_reason:
            return
        if reason is None:
            log.warning("read replica usable again (%s): reads go to the replica", detail)
        else:
            log.warning("read replica not used (%s: %s): reads go to the primary", reason, detail)
        self._down_reason = reason
        if reason == "unreachable":  # look again at the next check, not before
            self._next_check = self.clock() + self.check_every_s

    @property
    def using_replica(self) -> bool:
        return self.replica is not None and self._down_reason is None
