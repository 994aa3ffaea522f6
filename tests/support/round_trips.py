"""Count the messages a piece of work sends to the database (tests and `make bench`).

A round trip is one ``cursor.execute`` (a message may hold several statements), one
COMMIT or ROLLBACK, or one pool pre-ping at checkout. Counts, never time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@dataclass
class RoundTrips:
    statements: int = 0  # cursor executions
    commits: int = 0  # COMMIT and ROLLBACK that reach the server
    pings: int = 0  # pool_pre_ping checks at checkout

    @property
    def total(self) -> int:
        return self.statements + self.commits + self.pings


def _in_transaction(conn: Any) -> bool:
    dbapi_connection = conn.connection.dbapi_connection
    info = getattr(dbapi_connection, "info", None)
    status = getattr(info, "transaction_status", None)  # psycopg2: 0 is idle
    if status is not None:
        return bool(status != 0)
    return bool(getattr(dbapi_connection, "in_transaction", True))  # sqlite3


@contextmanager
def count_round_trips(engine: Engine) -> Iterator[RoundTrips]:
    counts = RoundTrips()
    pre_ping = bool(getattr(engine.pool, "_pre_ping", False))

    def on_execute(*_: Any) -> None:
        counts.statements += 1

    def on_commit(conn: Any) -> None:
        if _in_transaction(conn):  # psycopg2 sends nothing when no transaction is open
            counts.commits += 1

    def on_checkout(*_: Any) -> None:
        if pre_ping:
            counts.pings += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    event.listen(engine, "rollback", on_commit)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "rollback", on_commit)
        event.remove(engine.pool, "checkout", on_checkout)
