"""The hot path's prepared statements (identity/storage/prepared.py): the same answers and the same
messages with DB_PREPARED_STATEMENTS on (the default) and off (behind a pooler in
transaction mode); prepared once per connection, again on a connection SQLAlchemy
replaced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.graph import services
from identity.graph.reconcile import ClusterView
from identity.guards.policy import GuardPolicy
from identity.normalize import Identifiers
from identity.settings import Settings
from identity.storage.db import create_db_engine, run_in_transaction, run_read_only
from tests.conftest import make_settings
from tests.support.db import reset_contacts
from tests.support.invariants import check_invariants
from tests.support.round_trips import count_round_trips

REQUESTS = [
    Identifiers("lorraine@hillvalley.edu", "123456"),  # rule 1
    Identifiers("mcfly@hillvalley.edu", "123456"),  # rule 2
    Identifiers("george@hillvalley.edu", "919191"),  # rule 1
    Identifiers("lorraine@hillvalley.edu", "919191"),  # rule 3
    Identifiers("mcfly@hillvalley.edu", None),  # rule 4
    Identifiers("mcfly@hillvalley.edu", "919191"),  # rule 4, its link recorded
]


def engine_for(pg_url: str, prepared: bool) -> Engine:
    settings: Settings = make_settings(pg_url, db_prepared_statements=prepared)
    return create_db_engine(settings, pool_size=1, max_overflow=0)


def serve(engine: Engine, identifiers: Identifiers) -> tuple[ClusterView, int]:
    """As POST /identify runs it; returns the answer and the messages sent."""
    policy = GuardPolicy()
    with count_round_trips(engine) as counts:
        view = run_read_only(
            engine, lambda conn: services.peek(conn, identifiers=identifiers, policy=policy)
        )
        if view is None:
            view = run_in_transaction(
                engine,
                lambda conn: services.identify(
                    conn, identifiers=identifiers, peeked=True, policy=policy
                ),
            )
    assert isinstance(view, ClusterView)
    return view, counts.total


def prepared_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:  # the pool's one connection: the one that served
        return set(conn.execute(text("SELECT name FROM pg_prepared_statements")).scalars())


@pytest.fixture
def engines(pg_url: str) -> Iterator[dict[bool, Engine]]:
    out = {True: engine_for(pg_url, True), False: engine_for(pg_url, False)}
    yield out
    for engine in out.values():
        engine.dispose()


def test_the_same_answers_and_messages_prepared_or_not(engines: dict[bool, Engine]) -> None:
    seen: dict[bool, list[tuple[ClusterView, int]]] = {}
    for prepared, engine in engines.items():
        reset_contacts(engine)
        seen[prepared] = [serve(engine, i) for i in REQUESTS]
        with engine.connect() as conn:
            assert check_invariants(conn) == []
        names = prepared_names(engine)
        if prepared:
            assert {"identity_peek", "identity_guards_roots", "identity_roots"} <= names
        else:
            assert not {n for n in names if n.startswith("identity_")}
    assert [v for v, _ in seen[True]] == [v for v, _ in seen[False]]
    # The same messages (the first request may also create the guards' hash key).
    assert [n for _, n in seen[True][1:]] == [n for _, n in seen[False][1:]]
    assert seen[True][-2][0].secondary_ids == (2, 3)  # the worked example's one person


def test_a_replaced_connection_prepares_again(engines: dict[bool, Engine]) -> None:
    engine = engines[True]
    reset_contacts(engine)
    serve(engine, REQUESTS[0])
    engine.dispose()  # every pooled connection closed: the next one is new to the server
    view, _ = serve(engine, REQUESTS[1])
    assert view.emails == ("lorraine@hillvalley.edu", "mcfly@hillvalley.edu")
    assert "identity_peek" in prepared_names(engine)


def test_prepared_statements_are_planned_once_not_per_execute(
    engines: dict[bool, Engine],
) -> None:
    """With PostgreSQL's default plan_cache_mode the answer and merge statements (their
    integer[] parameter) got a custom plan on every EXECUTE, so preparing them saved
    nothing; the engine's connections force the generic plan for prepared statements."""
    engine = engines[True]
    reset_contacts(engine)
    for _ in range(4):  # the worked example again and again: answers and merges repeat
        for identifiers in REQUESTS:
            serve(engine, identifiers)
    with engine.connect() as conn:
        plans = {
            name: (generic, custom)
            for name, generic, custom in conn.execute(
                text(
                    "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE name LIKE 'identity_%'"
                )
            )
        }
    assert plans["identity_answer"][0] > 0
    assert all(custom == 0 for _, custom in plans.values()), plans
