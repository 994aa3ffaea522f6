"""``run_in_transaction(..., begin_in_first_message=True)`` (the /identify write path on
PostgreSQL): the same transaction as ``engine.begin()``, its BEGIN sent with the first
statement instead of one round trip before it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from identity.errors import TransientConflict, Unavailable
from identity.storage.db import create_db_engine, raw_execute, run_in_transaction
from tests.conftest import make_settings

# In one message, PostgreSQL stamps every statement with the message's arrival time, and
# a transaction with the time of its BEGIN: the two are equal in the first statement only
# when BEGIN came in the same message.
SAME_MESSAGE = "SELECT transaction_timestamp() = statement_timestamp()"


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_db_engine(make_settings(pg_url), pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS begin_probe"))
        conn.execute(text("CREATE TABLE begin_probe (n integer PRIMARY KEY)"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS begin_probe"))
    engine.dispose()


def rows(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT n FROM begin_probe ORDER BY n")).scalars())


def test_begin_travels_with_the_first_statement(engine: Engine) -> None:
    def first(conn: Connection) -> bool:
        return bool(raw_execute(conn, SAME_MESSAGE, {})[0][0])

    assert run_in_transaction(engine, first, begin_in_first_message=True) is True
    assert run_in_transaction(engine, first) is False  # psycopg2's own BEGIN: a message before


@pytest.mark.parametrize("how", ["raw", "sqlalchemy"])
def test_every_statement_is_inside_the_transaction(engine: Engine, how: str) -> None:
    def work(conn: Connection) -> None:
        if how == "raw":
            raw_execute(conn, "INSERT INTO begin_probe VALUES (1)", {})
        else:
            conn.execute(text("INSERT INTO begin_probe VALUES (1)"))
        raw_execute(conn, "INSERT INTO begin_probe VALUES (2)", {})
        in_block = raw_execute(conn, "SELECT now() <> statement_timestamp()", {})[0][0]
        assert in_block  # a later message, still the first message's transaction
        raise RuntimeError("the work fails after writing")

    with pytest.raises(RuntimeError):
        run_in_transaction(engine, work, begin_in_first_message=True)
    assert rows(engine) == []  # rolled back: nothing was autocommitted
    run_in_transaction(
        engine,
        lambda conn: raw_execute(conn, "INSERT INTO begin_probe VALUES (3)", {}),
        begin_in_first_message=True,
    )
    assert rows(engine) == [3]


def test_the_connection_goes_back_to_the_pool_as_it_came(engine: Engine) -> None:
    def fails(conn: Connection) -> None:
        raw_execute(conn, "SELECT 1", {})
        raise RuntimeError("after its first statement")

    with pytest.raises(RuntimeError):
        run_in_transaction(engine, fails, begin_in_first_message=True)
    run_in_transaction(engine, lambda conn: None, begin_in_first_message=True)  # no statement
    with engine.connect() as conn:  # the pool's one connection
        dbapi: Any = conn.connection.dbapi_connection
        assert dbapi.autocommit is False
        assert dbapi.info.transaction_status == 0  # idle: no transaction left open
        assert not {k for k in conn.connection.info if k.startswith("identity.begin")}


def test_a_failed_statement_is_retried_in_a_fresh_transaction(engine: Engine) -> None:
    attempts: list[int] = []

    def work(conn: Connection) -> int:
        attempts.append(1)
        raw_execute(conn, "INSERT INTO begin_probe VALUES (%(n)s)", {"n": len(attempts)})
        if len(attempts) < 3:
            raise TransientConflict("try again")
        return len(attempts)

    assert run_in_transaction(engine, work, begin_in_first_message=True, base_delay_s=0) == 3
    assert rows(engine) == [3]  # the first two attempts rolled back


def test_database_errors_map_as_before(engine: Engine) -> None:
    def work(conn: Connection) -> None:
        raw_execute(conn, "SET LOCAL lock_timeout = '1ms'", {})
        raw_execute(conn, "SELECT pg_advisory_xact_lock(77)", {})

    with engine.connect() as other, other.begin():
        other.execute(text("SELECT pg_advisory_xact_lock(77)"))
        other_engine = create_db_engine(
            make_settings(str(engine.url.render_as_string(hide_password=False)))
        )
        try:
            with pytest.raises(Unavailable):  # lock_timeout is retried, then 503's error
                run_in_transaction(
                    other_engine, work, begin_in_first_message=True, attempts=2, base_delay_s=0
                )
        finally:
            other_engine.dispose()
