"""Growth: cost per request as the table and the cluster grow, and round trips per rule.

In-process, one client, on a fresh copy of a seeded database: each request runs
``services.identify`` in its own unit of work, exactly as the route does, and is timed
with ``perf_counter``; the round trips are counted with SQLAlchemy events
(``tests/support/round_trips.py``). Requests that write are rolled back where a
measurement must be repeated on the same state (the 10,000 + 10,000 merge).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from bench.seed import GROWTH_CLUSTERS, growth_email, growth_phone, person_email, person_phone
from identity import services
from identity.db import create_db_engine, run_in_transaction
from identity.locking import identifier_keys, lock_keys
from identity.normalize import Identifiers
from identity.settings import Secret, Settings
from tests.support.round_trips import count_round_trips


def make_engine(url: str) -> Engine:
    return create_db_engine(Settings(database_url=Secret(url)))


def portable_identify(conn: Any, *, identifiers: Identifiers) -> Any:
    """The portable (SQLite) path of services, run on PostgreSQL: the 'before' figures."""
    lock_keys(conn, identifier_keys(identifiers))
    return services.apply_identifiers(conn, identifiers=identifiers)


def timed(
    engine: Engine,
    identifiers: Identifiers,
    *,
    path: Callable[..., Any] = services.identify,
    rollback: bool = False,
) -> tuple[float, int]:
    """(milliseconds, round trips) of one request in its own transaction."""
    with count_round_trips(engine) as counts:
        started = time.perf_counter()
        if rollback:
            with engine.connect() as conn, conn.begin() as tx:
                path(conn, identifiers=identifiers)
                tx.rollback()
        else:
            run_in_transaction(engine, lambda conn: path(conn, identifiers=identifiers))
        elapsed = (time.perf_counter() - started) * 1000
    # BEGIN is sent by psycopg2 before the first statement: one more message.
    return elapsed, counts.total + 1


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def per_request_cost(url: str, people: int, requests: int = 600) -> dict[str, Any]:
    """Median ms per request of a fixed lookup/secondary/new-person sequence (one client)."""
    engine = make_engine(url)
    rng = random.Random(7)
    results: dict[str, list[float]] = {"lookup": [], "secondary": [], "person": []}
    try:
        for i in range(requests):
            kind = ("lookup", "lookup", "lookup", "secondary", "person")[i % 5]
            p = rng.randrange(10, people)
            if kind == "lookup":
                ids = Identifiers(person_email(p), person_phone(p))
            elif kind == "secondary":
                ids = Identifiers(person_email(p), f"4{i:012d}")
            else:
                ids = Identifiers(f"grow{i}@new.test", f"3{i:012d}")
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
        for label, path in (("pg", services.identify), ("portable", portable_identify)):
            for name in ("one", "hundred", "tenk"):
                size = GROWTH_CLUSTERS[name]
                look = [
                    timed(engine, Identifiers(growth_email(name), None), path=path)
                    for _ in range(repeats)
                ]
                add = [
                    timed(
                        engine,
                        Identifiers(
                            growth_email(name),
                            f"2{label[0]}{i:09d}"[:15].replace("p", "1").replace("o", "2"),
                        ),
                        path=path,
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
                    path=path,
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
        for label, path in (("pg", services.identify), ("portable", portable_identify)):
            for rule, ids in requests.items():
                out[f"{label}:{rule}"] = timed(engine, ids, path=path, rollback=True)[1]
    finally:
        engine.dispose()
    return out
