"""Growth: cost per request as the table and the cluster grow, and round trips per rule.

In-process, one client, on a fresh copy of a seeded database: each request runs as
POST /identify runs it (the lock-free read, then one transaction if needed), and is timed
with ``perf_counter``; the round trips are counted with SQLAlchemy events
(``tests/support/round_trips.py``). Requests that write are rolled back where a
measurement must be repeated on the same state (the 10,000 + 10,000 merge).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from sqlalchemy.engine import Engine

from bench.seed import GROWTH_CLUSTERS, growth_email, growth_phone, person_email, person_phone
from identity.graph import pg_identify, services
from identity.guards.policy import GuardPolicy
from identity.normalize import Identifiers
from identity.settings import Secret, Settings
from identity.storage.db import create_db_engine, run_in_transaction, run_read_only
from identity.storage.locking import identifier_keys, lock_keys
from tests.support.round_trips import count_round_trips


def make_engine(url: str) -> Engine:
    return create_db_engine(Settings(database_url=Secret(url)))


def portable_identify(conn: Any, *, identifiers: Identifiers) -> Any:
    """The portable (SQLite) path of services, run on PostgreSQL: the 'before' figures."""
    lock_keys(conn, identifier_keys(identifiers))
    return services.apply_identifiers(conn, identifiers=identifiers)


def route_identify(conn: Any, *, identifiers: Identifiers) -> Any:
    """What POST /identify runs inside its transaction once the lock-free read said no."""
    return services.identify(conn, identifiers=identifiers, peeked=True)


#: The growth clusters share one email among thousands of phones: generic under the
#: default guards, so a "secondary into 10,000" would be a generic mark and a new person.
#: The cluster figures measure the rules' own work, guards' counting off (as
#: tests/integration/test_round_trips.py does); per_request_cost keeps the defaults.
NO_GENERIC = GuardPolicy(generic_threshold=0)


def rules_identify(conn: Any, *, identifiers: Identifiers) -> Any:
    return services.identify(conn, identifiers=identifiers, peeked=True, policy=NO_GENERIC)


def timed(
    engine: Engine,
    identifiers: Identifiers,
    *,
    path: Callable[..., Any] | None = None,
    rollback: bool = False,
) -> tuple[float, int]:
    """(milliseconds, messages) of one request, as the route runs it (``path`` None: the
    lock-free read, then the transaction only when the read could not answer), or
    ``path`` alone in one transaction. ``rollback``: undo the transaction's writes."""
    with count_round_trips(engine) as counts:
        started = time.perf_counter()
        work = path or route_identify
        view = None
        if path is None:
            view = run_read_only(engine, lambda c: services.peek(c, identifiers=identifiers))
        # The route sends BEGIN with its first statement; psycopg2, for the other paths, as
        # a message of its own before it (not seen by the counter: added below).
        first_message = path is None
        separate_begin = 0
        if view is None:
            separate_begin = 0 if first_message else 1

            def run(conn: Any) -> Any:
                result = work(conn, identifiers=identifiers)
                if rollback:
                    raise _Undo
                return result

            with suppress(_Undo):
                run_in_transaction(engine, run, begin_in_first_message=first_message)
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, counts.total + separate_begin


class _Undo(Exception):
    """Raised at the end of a timed transaction to roll its writes back."""


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def per_request_cost(url: str, people: int, run: int, requests: int = 600) -> dict[str, Any]:
    """Median ms per request of a lookup/secondary/new-person sequence (one client).

    ``run`` makes the new identifiers of each run distinct, so a second run on the same
    database inserts again instead of repeating lookups."""
    engine = make_engine(url)
    rng = random.Random(7 + run)
    results: dict[str, list[float]] = {"lookup": [], "secondary": [], "person": []}
    try:
        for i in range(requests):
            kind = ("lookup", "lookup", "lookup", "secondary", "person")[i % 5]
            p = rng.randrange(10, people)
            if kind == "lookup":
                ids = Identifiers(person_email(p), person_phone(p))
            elif kind == "secondary":
                ids = Identifiers(person_email(p), f"4{run}{i:012d}")
            else:
                ids = Identifiers(f"grow{run}.{i}@new.test", f"3{run}{i:012d}")
            results[kind].append(timed(engine, ids)[0])
    finally:
        engine.dispose()
    return {kind: summary(values) for kind, values in results.items()}


def cluster_costs(url: str, repeats: int = 15) -> dict[str, Any]:
    """Rule 4 and rule 2 into clusters of 1, 100 and 10,000 rows; a 10k + 10k merge.

    Each figure for the PostgreSQL path and, for comparison, the portable path.
    """
    engine = make_engine(url)
    out: dict[str, Any] = {}
    try:
        for label, path in (("pg", None), ("portable", portable_identify)):
            write_path = rules_identify if path is None else path
            for name in ("one", "hundred", "tenk"):
                size = GROWTH_CLUSTERS[name]
                look = [
                    timed(engine, Identifiers(growth_email(name), None), path=path)
                    for _ in range(repeats)
                ]
                add = [
                    timed(
                        engine,
                        Identifiers(growth_email(name), f"2{i:09d}"),
                        path=write_path,
                        rollback=True,
                    )
                    for i in range(repeats)
                ]
                out[f"{label}:lookup:{size}"] = summary([t for t, _ in look]) | {
                    "round_trips": look[-1][1]
                }
                out[f"{label}:secondary:{size}"] = summary([t for t, _ in add]) | {
                    "round_trips": add[-1][1]
                }
            merge = [
                timed(
                    engine,
                    Identifiers(growth_email("mergea"), growth_phone("mergeb")),
                    path=write_path,
                    rollback=True,
                )
                for _ in range(max(3, repeats // 3))
            ]
            out[f"{label}:merge:10000+10000"] = summary([t for t, _ in merge]) | {
                "round_trips": merge[-1][1]
            }
    finally:
        engine.dispose()
    return out


def plan_costs(url: str, repeats: int = 9) -> dict[str, Any]:
    """Planning and execution of the lock-free read (``_PEEK``) and the answer
    (``_ANSWER``) for clusters of 1, 100 and 10,000 rows, from ``EXPLAIN ANALYZE``:
    sent as text (planned every time) and as the prepared statement the service runs
    (its generic plan, planned once). Medians in ms."""
    engine = make_engine(url)
    out: dict[str, Any] = {}

    def explain(conn: Any, sql: str) -> tuple[float, float]:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}")
        doc = plan.scalar_one()[0]
        return float(doc.get("Planning Time", 0.0)), float(doc["Execution Time"])

    try:
        with engine.connect() as conn:
            for name in ("one", "hundred", "tenk"):
                size = GROWTH_CLUSTERS[name]
                email = growth_email(name)
                root = conn.exec_driver_sql(
                    "SELECT min(id) FROM contact WHERE email = %(e)s", {"e": email}
                ).scalar_one()
                values = {"e": f"'{email}'", "p": "NULL", "he": "md5('x')", "hp": "NULL"}
                answer = {"e": f"'{email}'", "p": "NULL", "w": str(root)}
                statements = {
                    "peek": (pg_identify._PEEK % values, pg_identify._PEEK_X, values),
                    "answer": (
                        pg_identify._ANSWER % (answer | {"roots": f"ARRAY[{root}]"}),
                        pg_identify._ANSWER_X,
                        answer | {"roots": f"ARRAY[{root}]::int[]"},
                    ),
                }
                for what, (text_sql, prepared, literals) in statements.items():
                    texts = [explain(conn, text_sql) for _ in range(repeats)]
                    conn.exec_driver_sql(f"DEALLOCATE ALL; {prepared.prepare}")
                    execute = prepared.execute.replace("%(", "{").replace(")s", "}")
                    execute = execute.format(**literals)
                    runs = [explain(conn, execute) for _ in range(repeats)]
                    conn.exec_driver_sql("DEALLOCATE ALL")
                    out[f"{what}:{size}"] = {
                        "text_planning_ms": statistics.median(p for p, _ in texts),
                        "text_execution_ms": statistics.median(e for _, e in texts),
                        "prepared_execution_ms": statistics.median(e for _, e in runs[5:]),
                    }
            conn.rollback()
    finally:
        engine.dispose()
    return out


def round_trips_per_rule(url: str, people: int) -> dict[str, Any]:
    """Messages per rule, PostgreSQL path and portable path (BEGIN, pre-ping, COMMIT counted)."""
    engine = make_engine(url)
    p, q = people - 1, people - 2
    requests = {
        "rule 1 (new person)": Identifiers("rt-new@new.test", "3999999999"),
        "rule 2 (new secondary)": Identifiers(person_email(p), "3888888888"),
        "rule 3 (merge)": Identifiers(person_email(p), person_phone(q)),
        "rule 4 (lookup)": Identifiers(person_email(p), None),
    }
    out: dict[str, Any] = {}
    try:
        for label, path in (("pg", None), ("portable", portable_identify)):
            for rule, ids in requests.items():
                out[f"{label}:{rule}"] = timed(engine, ids, path=path, rollback=True)[1]
    finally:
        engine.dispose()
    return out
