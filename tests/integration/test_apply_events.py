"""apply_events on real PostgreSQL and SQLite: same result as identify() one by one."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.events import services as event_services
from identity.events.messages import Event
from identity.graph import services
from identity.normalize import Identifiers
from identity.storage.db import run_in_transaction
from tests.support.db import reset_contacts
from tests.support.invariants import assert_consistent

emails = st.sampled_from(["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io", None])
phones = st.sampled_from(["111", "222", "333", "444", "555", None])
identifiers = (
    st.tuples(emails, phones)
    .filter(lambda p: p != (None, None))
    .map(lambda p: Identifiers(email=p[0], phone=p[1]))
)


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT id, email, phone_number, linked_id, link_precedence FROM contact"
                    " WHERE deleted_at IS NULL ORDER BY id"
                )
            )
        ]


def identify_all(engine: Engine, pairs: list[Identifiers]) -> None:
    for pair in pairs:
        run_in_transaction(engine, lambda conn, p=pair: services.identify(conn, identifiers=p))


def events_of(pairs: list[Identifiers], prefix: str) -> list[Event]:
    return [Event(f"{prefix}-{i}", p) for i, p in enumerate(pairs)]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=st.lists(identifiers, max_size=8), batch=st.lists(identifiers, min_size=1, max_size=12)
)
@example(  # a newer cluster with a secondary merged into an older one, twice over
    history=[
        Identifiers("a@x.io", "111"),
        Identifiers("c@x.io", "222"),
        Identifiers("d@x.io", "222"),
        Identifiers("e@x.io", "333"),
        Identifiers("e@x.io", "444"),
    ],
    batch=[Identifiers("c@x.io", "333"), Identifiers("b@x.io", None), Identifiers("a@x.io", "444")],
)
def test_batch_equals_sequential_identify(
    engine: Engine, history: list[Identifiers], batch: list[Identifiers]
) -> None:
    reset_contacts(engine)
    identify_all(engine, history + batch)
    expected = rows(engine)

    reset_contacts(engine)
    identify_all(engine, history)
    result = run_in_transaction(
        engine, lambda conn: event_services.apply_events(conn, events_of(batch, "b"))
    )
    assert rows(engine) == expected  # same ids, values, links and precedence
    assert result.applied == len(batch)
    with engine.connect() as conn:
        assert_consistent(conn, [(p.email, p.phone) for p in history + batch])


def test_an_event_applies_once_however_often_it_is_delivered(engine: Engine) -> None:
    first = [Event("e1", Identifiers("a@x.io", "111")), Event("e2", Identifiers("b@x.io", "111"))]
    once = run_in_transaction(engine, lambda conn: event_services.apply_events(conn, first))
    assert (once.applied, once.duplicates, once.inserted) == (2, 0, 2)
    after_once = rows(engine)
    # Redelivered, and repeated inside one batch, next to a new event.
    again = [*first, first[0], Event("e3", Identifiers("c@x.io", "111"))]
    twice = run_in_transaction(engine, lambda conn: event_services.apply_events(conn, again))
    assert (twice.applied, twice.duplicates, twice.inserted) == (1, 3, 1)
    assert rows(engine)[:2] == after_once
    with engine.connect() as conn:
        ledger = conn.execute(text("SELECT event_id FROM processed_event ORDER BY 1")).scalars()
        assert list(ledger) == ["e1", "e2", "e3"]


def test_a_failed_batch_leaves_no_trace(engine: Engine) -> None:
    events = [Event("f1", Identifiers("a@x.io", "111"))]

    def apply_then_fail(conn: object) -> None:
        event_services.apply_events(conn, events)  # type: ignore[arg-type]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_in_transaction(engine, apply_then_fail)
    assert rows(engine) == []
    result = run_in_transaction(engine, lambda conn: event_services.apply_events(conn, events))
    assert result.applied == 1  # the ledger rolled back with the change


def test_applied_events_leave_the_inbox(engine: Engine) -> None:
    accepted = [Event("i1", Identifiers("a@x.io", None)), Event("i2", Identifiers(None, "222"))]
    run_in_transaction(engine, lambda conn: event_services.accept_events(conn, accepted))
    run_in_transaction(engine, lambda conn: event_services.apply_events(conn, accepted[:1]))
    with engine.connect() as conn:
        assert event_services.inbox_pending(conn) == 1
        left = event_services.claim_unpublished(conn, limit=10)
    assert [r.event.event_id for r in left] == ["i2"]
    assert left[0].event.identifiers == Identifiers(None, "222")


def test_dead_letters_are_recorded_counted_and_taken(engine: Engine) -> None:
    payload = {"eventId": "p1", "email": "bad"}
    for error in ("first failure", "second failure"):
        run_in_transaction(
            engine,
            lambda conn, e=error: event_services.record_dead_letter(
                conn, event_id="p1", payload=payload, error=e
            ),
        )
    with engine.connect() as conn:
        [letter] = event_services.list_dead_letters(conn)
    assert (letter.event_id, letter.payload, letter.error, letter.attempts) == (
        "p1",
        payload,
        "second failure",
        2,
    )
    taken = run_in_transaction(engine, lambda conn: event_services.take_dead_letters(conn, ["p1"]))
    assert [t.event_id for t in taken] == ["p1"]
    with engine.connect() as conn:
        assert event_services.count_dead_letters(conn) == 0


def test_a_batch_of_new_phone_only_persons(engine: Engine) -> None:
    """Every new row a primary and none with an email: arrays of NULLs only, which
    PostgreSQL types as text[] unless the statement casts them."""
    events = [Event(f"p-{i}", Identifiers(None, f"555010{i}")) for i in range(3)]
    result = run_in_transaction(engine, lambda conn: event_services.apply_events(conn, events))
    assert (result.applied, result.inserted) == (3, 3)
    assert [r[1:] for r in rows(engine)] == [
        (None, f"555010{i}", None, "primary") for i in range(3)
    ]
