"""Deadlocks and serialization failures on real PostgreSQL are retried, never surfaced
(issue 5), and the domain's signals (retry, merge) reach subscribers only for work that
committed."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from identity import observe
from identity.storage.db import run_in_transaction

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


@pytest.fixture
def signals() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    def observer(name: str, fields: Mapping[str, Any]) -> None:
        seen.append((name, dict(fields)))

    observe.subscribe(observer)
    yield seen
    observe.unsubscribe(observer)


@pytest.fixture
def two_rows(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contact (id, email, link_precedence, created_at, updated_at)"
                " VALUES (1, 'a@x.io', 'primary', now(), now()),"
                " (2, 'b@x.io', 'primary', now(), now())"
            )
        )
    return engine


def touch(conn: Connection, row_id: int) -> None:
    conn.execute(text("UPDATE contact SET updated_at = now() WHERE id = :i"), {"i": row_id})


def run_pair(work_a: Any, work_b: Any, engine: Engine) -> list[object]:
    results: list[object] = [None, None]

    def run(i: int, work: Any) -> None:
        try:
            results[i] = run_in_transaction(engine, work)
        except Exception as error:  # recorded, asserted below
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate((work_a, work_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_a_real_deadlock_is_retried_and_both_transactions_commit(
    two_rows: Engine, signals: list[tuple[str, dict[str, Any]]]
) -> None:
    barrier = threading.Barrier(2, timeout=10)
    first_try = {"a": True, "b": True}

    def crossing(name: str, first: int, second: int) -> Any:
        def work(conn: Connection) -> str:
            touch(conn, first)
            if first_try[name]:  # only the first attempt meets the other in the middle
                first_try[name] = False
                barrier.wait()
            touch(conn, second)
            return name

        return work

    results = run_pair(crossing("a", 1, 2), crossing("b", 2, 1), two_rows)
    assert results == ["a", "b"]
    assert ("retry", {"reason": "deadlock"}) in signals


def test_a_serialization_failure_is_retried(
    two_rows: Engine, signals: list[tuple[str, dict[str, Any]]]
) -> None:
    engine = two_rows.execution_options(isolation_level="REPEATABLE READ")
    barrier = threading.Barrier(2, timeout=10)
    attempts = {"a": 0, "b": 0}

    def writer(name: str) -> Any:
        def work(conn: Connection) -> str:
            attempts[name] += 1
            conn.execute(text("SELECT updated_at FROM contact WHERE id = 1")).all()  # snapshot
            if attempts[name] == 1:
                barrier.wait()  # both hold a snapshot from before the other's update
            touch(conn, 1)
            return name

        return work

    assert run_pair(writer("a"), writer("b"), engine) == ["a", "b"]
    assert ("retry", {"reason": "serialization"}) in signals
    assert sorted(attempts.values()) == [1, 2]


def test_signals_recorded_in_a_rolled_back_transaction_are_dropped(
    engine: Engine, signals: list[tuple[str, dict[str, Any]]]
) -> None:
    def fails(conn: Connection) -> None:
        observe.record(conn, observe.MERGE, demoted=1)
        raise ValueError("after the merge, before the commit")

    with pytest.raises(ValueError):
        run_in_transaction(engine, fails)
    assert signals == []

    def commits(conn: Connection) -> None:
        observe.record(conn, observe.MERGE, demoted=2)
        assert signals == []  # held until the commit

    run_in_transaction(engine, commits)
    assert signals == [("merge", {"demoted": 2})]


def test_a_failing_subscriber_never_breaks_the_write_path(engine: Engine) -> None:
    def broken(name: str, fields: Mapping[str, Any]) -> None:
        raise RuntimeError("observer bug")

    observe.subscribe(broken)
    try:
        assert run_in_transaction(engine, lambda conn: observe.record(conn, "merge") or 7) == 7
    finally:
        observe.unsubscribe(broken)
