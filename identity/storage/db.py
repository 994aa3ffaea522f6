"""Engines and the unit of work.

Engines are built from Settings by a factory, never at import. ``run_in_transaction``
is the one place where transactions begin, commit, roll back and are retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, create_engine, event, exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.types import TypeDecorator

from identity import observe
from identity.errors import TransientConflict, Unavailable
from identity.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# SQLSTATEs worth running the whole transaction again for.
RETRYABLE_PG_CODES = frozenset(
    {
        "40P01",  # deadlock_detected
        "40001",  # serialization_failure
        "55P03",  # lock_not_available (lock_timeout)
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to UTCDateTime")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_db_engine(settings: Settings, *, url: str | None = None, **overrides: Any) -> Engine:
    """Build the engine for ``settings``: pooled PostgreSQL, or the embedded SQLite file.

    ``url``: another database with the same settings (the read replica).
    """
    url = url or settings.sqlalchemy_url
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            hide_parameters=True,  # identifiers are personal data: never in errors or logs
            connect_args={"timeout": settings.db_lock_timeout_ms / 1000},
            **overrides,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event own the transaction (pysqlite would
            # otherwise BEGIN lazily and DEFERRED).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(settings.db_lock_timeout_ms)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # One writer at a time: SQLite's own lock is the embedded default's
            # concurrency control (docs/ARCHITECTURE.md). A snapshot read (run_snapshot)
            # begins DEFERRED: a consistent read that never holds the write lock.
            if conn.get_execution_options().get("identity_snapshot"):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    options = (
        f"-c statement_timeout={int(settings.db_statement_timeout_ms)}"
        f" -c lock_timeout={int(settings.db_lock_timeout_ms)}"
        " -c idle_in_transaction_session_timeout=60000"
        # Only the hot paths' statements (identify, event batches) are PREPAREd
        # (identity.storage.prepared), and a custom plan would re-plan them on every
        # EXECUTE: PostgreSQL kept choosing one for the answer and merge statements (their
        # integer[] parameter), which then cost three times their execution
        # (docs/DECISIONS.md, "Generic plans").
        " -c plan_cache_mode=force_generic_plan"
    )
    params: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
        # No ping at checkout (it is one round trip per request): a connection found
        # dead on first use is retried once on a fresh one (run_in_transaction and
        # run_read_only), and SQLAlchemy then recycles the rest of the pool.
        "pool_pre_ping": False,
        "pool_recycle": 1800,
        "hide_parameters": True,  # identifiers are personal data: never in errors or logs
        # identity.storage.prepared reads it: PREPARE/EXECUTE, or the same SQL as text.
        "execution_options": {"identity_prepared": settings.db_prepared_statements},
        "connect_args": {
            "options": options,
            "connect_timeout": max(1, int(settings.db_pool_timeout_s)),
            "application_name": "identity-reconciliation",
        },
    }
    params.update(overrides)
    engine = create_engine(url, **params)
    event.listen(engine, "before_cursor_execute", _begin_in_this_message, retval=True)
    return engine


#: ``conn.connection.info`` keys of a transaction whose BEGIN rides in its first message
#: (``run_in_transaction(..., begin_in_first_message=True)``): pending, then sent.
_BEGIN_PENDING = "identity.begin_pending"
_BEGUN = "identity.begun"


def _take_begin(info: dict[str, Any]) -> str:
    """``"BEGIN;"`` when the connection's transaction has not been opened yet, else ``""``."""
    if info.pop(_BEGIN_PENDING, False):
        info[_BEGUN] = True
        return "BEGIN;"
    return ""


def _begin_in_this_message(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    _context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    """A statement SQLAlchemy sends first in such a transaction opens it (raw_execute's
    messages open it themselves)."""
    if _BEGIN_PENDING in conn.connection.info:
        begin = _take_begin(conn.connection.info)
        if executemany:
            cursor.execute(begin)
        else:
            statement = begin + statement
    return statement, parameters


@contextmanager
def _first_message_transaction(engine: Engine) -> Iterator[Connection]:
    """A PostgreSQL transaction whose ``BEGIN`` travels with its first statement.

    psycopg2 opens a transaction with a ``BEGIN`` of its own, one round trip before the
    first statement; here the connection is in autocommit on the client while the server
    runs ``BEGIN;<first message>`` ... ``COMMIT`` (or ``ROLLBACK``), so the same
    transaction costs one message less (docs/DECISIONS.md, "BEGIN in the first message").
    Every statement of the work is inside it: raw_execute and the engine's
    ``before_cursor_execute`` listener put the pending ``BEGIN`` in front of whichever
    statement goes first.
    """
    with engine.connect() as conn:
        dbapi_connection: Any = conn.connection.dbapi_connection
        info = conn.connection.info
        dbapi_connection.autocommit = True
        info[_BEGIN_PENDING] = True
        try:
            yield conn
            if info.pop(_BEGUN, False):
                raw_execute(conn, "COMMIT", {})
        except BaseException:
            if info.pop(_BEGUN, False) and not dbapi_connection.closed and not conn.invalidated:
                with suppress(exc.DBAPIError):  # gone: the server rolled back on its own
                    raw_execute(conn, "ROLLBACK", {})
            raise
        finally:
            info.pop(_BEGIN_PENDING, None)
            info.pop(_BEGUN, None)
            if not dbapi_connection.closed:
                dbapi_connection.autocommit = False


def is_retryable(error: BaseException) -> bool:
    """Transient contention: deadlock, serialization failure, lock timeout, SQLite busy."""
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    if getattr(orig, "pgcode", None) in RETRYABLE_PG_CODES:
        return True
    return "database is locked" in str(orig)


def retry_reason(error: exc.DBAPIError) -> str:
    """A short, stable label for why a transaction is run again (metrics, logs)."""
    pgcode = getattr(error.orig, "pgcode", None)
    return {"40P01": "deadlock", "40001": "serialization", "55P03": "lock_timeout"}.get(
        pgcode or "", "busy"
    )


def unavailable_reason(error: BaseException) -> str:
    """A short, stable label for why the database could not serve (metrics, logs)."""
    if isinstance(error, exc.TimeoutError):
        return "pool_timeout"
    if getattr(getattr(error, "orig", None), "pgcode", None) == "57014":
        return "statement_timeout"
    return "unreachable"


def is_unavailable(error: BaseException) -> bool:
    """The database cannot be reached, or the pool is exhausted."""
    if isinstance(error, exc.TimeoutError):
        return True  # pool checkout timed out
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        pgcode = getattr(error.orig, "pgcode", None)
        if pgcode == "57014":  # statement_timeout
            return True
        if isinstance(error, exc.OperationalError) and pgcode is None:
            return True  # connection refused / closed by server
        if pgcode and pgcode.startswith(("08", "57P")):  # connection / shutdown classes
            return True
    return False


def run_in_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    attempts: int = 8,
    base_delay_s: float = 0.005,
    max_delay_s: float = 0.2,
    begin_in_first_message: bool = False,
) -> T:
    """Run ``work`` in one transaction: commit on return, roll back on exception.

    Transient contention is retried with bounded, jittered exponential backoff.
    An unreachable database, or contention outlasting every attempt, raises
    :class:`Unavailable`; anything else propagates unchanged.

    ``begin_in_first_message``: on PostgreSQL, send ``BEGIN`` with the work's first
    statement instead of one round trip before it (the /identify write path).
    """
    first_message = begin_in_first_message and engine.dialect.name == "postgresql"
    for attempt in range(1, attempts + 1):
        committing = False
        try:
            with _first_message_transaction(engine) if first_message else engine.begin() as conn:
                pending = observe.begin()
                try:
                    result = work(conn)
                finally:
                    signals = observe.take(pending)
                committing = True
            observe.flush(signals)  # committed: what it recorded really happened
            return result
        except exc.DBAPIError as error:
            if error.connection_invalidated and not committing and attempt < attempts:
                # The connection died before COMMIT was sent: nothing was committed, and
                # the pool now hands out fresh connections. (A failure *during* COMMIT
                # has an unknown outcome and is not retried here.)
                observe.emit(observe.RETRY, reason="disconnect")
                continue
            if is_retryable(error) and attempt < attempts:
                delay = min(max_delay_s, base_delay_s * 2**attempt)
                time.sleep(random.uniform(0, delay))
                log.info(
                    "retrying transaction after %s (attempt %d)", type(error.orig).__name__, attempt
                )
                observe.emit(observe.RETRY, reason=retry_reason(error))
                continue
            if is_retryable(error):
                raise Unavailable(
                    "database busy or unreachable, try again", reason="contention"
                ) from error
            if is_unavailable(error):
                raise Unavailable(
                    "database busy or unreachable, try again", reason=unavailable_reason(error)
                ) from error
            raise
        except TransientConflict:
            if attempt < attempts:
                time.sleep(random.uniform(0, min(max_delay_s, base_delay_s * 2**attempt)))
                observe.emit(observe.RETRY, reason="conflict")
                continue
            raise Unavailable(
                "too much contention on these identifiers, try again", reason="contention"
            ) from None
        except exc.TimeoutError as error:
            raise Unavailable(
                "database busy or unreachable, try again", reason="pool_timeout"
            ) from error
    raise AssertionError("unreachable")  # pragma: no cover


def _read_autocommit(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            return work(conn)
        # psycopg2's own autocommit flag, set and restored on the client only. (The
        # isolation_level="AUTOCOMMIT" execution option would cost a round trip more:
        # SQLAlchemy resets it with SET default_transaction_isolation at check-in.)
        dbapi_connection: Any = conn.connection.dbapi_connection
        dbapi_connection.autocommit = True
        try:
            return work(conn)
        finally:
            if not dbapi_connection.closed:
                dbapi_connection.autocommit = False


def run_read_only(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on an autocommit connection: no BEGIN, no COMMIT, no locks held.

    Each statement is its own snapshot, so this is only for reads that need neither
    locks nor consistency across statements (``services.peek``): a one-statement read
    is then one round trip. Errors map as in :func:`run_in_transaction`.
    """
    try:
        try:
            return _read_autocommit(engine, work)
        except exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
            return _read_autocommit(engine, work)  # a read: once more on a fresh connection
    except exc.DBAPIError as error:
        if is_retryable(error) or is_unavailable(error):
            raise Unavailable(
                "database busy or unreachable, try again", reason=unavailable_reason(error)
            ) from error
        raise
    except exc.TimeoutError as error:
        raise Unavailable(
            "database busy or unreachable, try again", reason="pool_timeout"
        ) from error


def text_array(values: Sequence[str | None]) -> str:
    """``values`` as one PostgreSQL array literal, for a ``%(x)s::text[]`` parameter (or
    any type PostgreSQL reads from text: ``::json[]``, ``::timestamptz[]``).

    psycopg2 adapts a list element by element (~0.7 us each); an event batch sends
    thousands of values a transaction, and one string is adapted once. Every element is
    double-quoted with its backslashes and double quotes escaped, so any text comes back
    as it was, and None is NULL (tests/integration/test_pg_arrays.py); a list with no
    None and no quote or backslash in any element, the usual case, is one join and no
    per-element work.
    """
    if not values:
        return "{}"
    if None not in values:
        texts: Sequence[str] = values  # type: ignore[assignment]
        joined = '","'.join(texts)
        if "\\" not in joined and joined.count('"') == 2 * (len(values) - 1):
            return '{"' + joined + '"}'  # no element holds a quote or a backslash
    return "{" + ",".join(_array_element(v) for v in values) + "}"


def _array_element(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def int_array(values: Sequence[int | None]) -> str:
    """``values`` as one PostgreSQL array literal, for ``%(x)s::integer[]`` or ``::bigint[]``;
    None is NULL."""
    if None in values:
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return "{" + ",".join(map(str, values)) + "}"


#: The sequences behind the serial ids, by PostgreSQL's own names for them
#: (``<table>_<column>_seq``; tests/integration/test_pg_arrays.py checks them against
#: ``pg_get_serial_sequence``).
SEQUENCES = {"contact": "contact_id_seq", "change": "change_id_seq"}


def draw_ids(conn: Connection, table: str, count: int) -> list[int]:
    """``count`` fresh ids from ``table``'s id sequence, ascending, in one round trip.

    The sequence is named as a literal, resolved once when the statement is parsed:
    ``nextval(pg_get_serial_sequence(...))`` looked it up again for every row (150 ids:
    0.8-1.0 ms against 0.23-0.29 in pgbench, docs/DECISIONS.md).
    """
    if count == 0:
        return []
    sql = f"SELECT nextval('{SEQUENCES[table]}'::regclass) FROM generate_series(1, %(n)s)"
    return sorted(r[0] for r in raw_execute(conn, sql, {"n": count}))


def raw_execute(conn: Connection, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Send ``sql`` (one message, maybe several statements) on ``conn``'s DBAPI cursor and
    return the last statement's rows as plain tuples.

    For the hot path only: it skips SQLAlchemy's execution context and result objects
    (about 20 us of CPU a statement, measured in docs/DECISIONS.md) and keeps what the
    rest of the project relies on: the ``before_cursor_execute`` listeners still see
    every message (the round-trip counter of the tests and the bench), and a DBAPI
    error is raised as SQLAlchemy's ``DBAPIError`` with the parameters hidden and the
    connection invalidated when the server is gone, exactly as ``exec_driver_sql``
    would, so :func:`run_in_transaction` and :func:`run_read_only` map and retry it
    the same way.
    """
    dbapi_connection: Any = conn.connection.dbapi_connection
    if _BEGIN_PENDING in conn.connection.info:
        sql = _take_begin(conn.connection.info) + sql
    cursor = dbapi_connection.cursor()
    try:
        for listener in conn.dispatch.before_cursor_execute:
            listener(conn, cursor, sql, params, None, False)
        try:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []
        except conn.dialect.loaded_dbapi.Error as error:
            gone = conn.dialect.is_disconnect(error, dbapi_connection, cursor)
            if gone and not conn.invalidated:
                conn.invalidate(error)
            raise exc.DBAPIError.instance(
                sql,
                None,
                error,
                conn.dialect.loaded_dbapi.Error,
                hide_parameters=True,
                connection_invalidated=gone,
                dialect=conn.dialect,
            ) from error
    finally:
        if not cursor.closed:
            cursor.close()


def run_snapshot(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run a read of several statements on one consistent snapshot, writing nothing.

    PostgreSQL: a ``REPEATABLE READ READ ONLY`` transaction (the database refuses any
    write in it); SQLite: a deferred transaction. Errors map as in
    :func:`run_in_transaction`.
    """
    if engine.dialect.name == "postgresql":
        options: dict[str, Any] = {
            "isolation_level": "REPEATABLE READ",
            "postgresql_readonly": True,
        }
    else:
        options = {"identity_snapshot": True}
    return run_in_transaction(engine.execution_options(**options), work)
