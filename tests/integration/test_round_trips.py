"""Round trips per SPEC rule on PostgreSQL: a small constant, whatever the cluster size.

Counts, not time (speed is measured by `make bench`). A cluster of one row and one of
SIZE rows must cost the same number of messages for every rule; the bounds are those
documented in docs/benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from identity.graph import services
from identity.graph.reconcile import ClusterView
from identity.guards.hashing import resolve_key
from identity.guards.policy import GuardPolicy
from identity.normalize import Identifiers
from identity.storage.db import create_db_engine, run_in_transaction, run_read_only
from identity.storage.models import Contact
from tests.conftest import make_settings
from tests.support.db import reset_contacts
from tests.support.invariants import check_invariants
from tests.support.round_trips import RoundTrips, count_round_trips

SIZE = 300
T0 = datetime(2024, 1, 1, tzinfo=UTC)

# Messages per rule (each one cursor execute; the COMMIT and the pool's pre-ping come on
# top). Every request first reads without locks (identity/graph/pg_identify.py); a repeat
# lookup (rule 4) ends there. Otherwise: locks+roots, then rule 1 inserts; rules 2 and 3
# read the answer and write (a merging request holds two known identifiers, so it
# never inserts).
# Writes: the peek; the identifier locks, the guards of the values and the root locks (one
# message); the answer; the write. A repeat lookup: the peek alone.
EXPECTED_STATEMENTS = {"rule1": 3, "rule2": 4, "rule3": 4, "rule4": 1}


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_db_engine(make_settings(pg_url))
    reset_contacts(engine)
    # The guards' hash key is created (and cached) by the first request that needs it: make
    # it now, so the counts below are a request's own, whichever test runs first.
    run_in_transaction(engine, lambda conn: resolve_key(conn, ""))
    yield engine
    engine.dispose()


def seed_cluster(engine: Engine, name: str, size: int, start: int) -> None:
    """A primary and size-1 secondaries, all holding phone 'p-<name>' or email '<name>@x.io'."""
    rows = []
    for i in range(size):
        created = T0 + timedelta(seconds=start + i)
        rows.append(
            {
                "email": f"{name}@x.io" if i % 2 == 0 else f"{name}.{i}@x.io",
                "phone_number": f"1{start + i:09d}" if i % 2 == 0 else f"9{start:09d}",
                "linked_id": None,
                "link_precedence": "primary",
                "created_at": created,
                "updated_at": created,
            }
        )
    with engine.begin() as conn:
        first = conn.execute(insert(Contact).values(rows[0]).returning(Contact.id)).scalar_one()
        if size > 1:
            for row in rows[1:]:
                row.update(linked_id=first, link_precedence="secondary")
            conn.execute(insert(Contact), rows[1:])


# The seeded clusters share one email among hundreds of phones: a generic value by the
# guards' default threshold. The round trips are the same with guards on or off (the
# guards travel with the identifier locks); off keeps the rules' writes to measure.
NO_GENERIC = GuardPolicy(generic_threshold=0)


def measure(engine: Engine, identifiers: Identifiers) -> tuple[RoundTrips, ClusterView]:
    with count_round_trips(engine) as counts:
        view = run_in_transaction(
            engine,
            lambda conn: services.identify(conn, identifiers=identifiers, policy=NO_GENERIC),
        )
    assert isinstance(view, ClusterView)
    return counts, view


@pytest.mark.parametrize("size", [1, SIZE])
def test_round_trips_per_rule_do_not_grow_with_the_cluster(pg_engine: Engine, size: int) -> None:
    seed_cluster(pg_engine, "a", size, start=0)
    seed_cluster(pg_engine, "b", size, start=100_000)
    seen: dict[str, RoundTrips] = {}

    seen["rule4"], view = measure(pg_engine, Identifiers("a@x.io", None))
    assert len(view.secondary_ids) == size - 1
    seen["rule1"], view = measure(pg_engine, Identifiers("new@x.io", "555000"))
    assert view.secondary_ids == ()
    seen["rule2"], view = measure(pg_engine, Identifiers("a@x.io", "555111"))
    assert len(view.secondary_ids) == size
    seen["rule3"], view = measure(pg_engine, Identifiers("a@x.io", "1000100000"))
    assert len(view.secondary_ids) == 2 * size

    for rule, counts in seen.items():
        assert counts.statements == EXPECTED_STATEMENTS[rule], (rule, counts)
        assert counts.commits == 1, (rule, counts)
        assert counts.pings <= 1, (rule, counts)
    with pg_engine.connect() as conn:
        assert check_invariants(conn) == []


@pytest.mark.parametrize("size", [1, SIZE])
def test_repeat_lookup_as_the_route_runs_it_is_one_message(pg_engine: Engine, size: int) -> None:
    seed_cluster(pg_engine, "a", size, start=0)
    for identifiers in (Identifiers("a@x.io", None), Identifiers("a@x.io", "1000000000")):
        with count_round_trips(pg_engine) as counts:
            view = run_read_only(
                pg_engine, lambda conn, i=identifiers: services.peek(conn, identifiers=i)
            )
        assert view is not None and len(view.secondary_ids) == size - 1
        assert (counts.statements, counts.commits, counts.pings) == (1, 0, 0), counts
    # A request that may write is not answered by the read: the transaction takes over.
    with count_round_trips(pg_engine) as counts:
        view = run_read_only(
            pg_engine, lambda conn: services.peek(conn, identifiers=Identifiers("a@x.io", "777"))
        )
    assert view is None and counts.statements == 1
