"""Guards on the event path, on PostgreSQL and SQLite (SPEC "Guards": events are checked
when applied; "Erasure": an event in flight during an erasure is applied without the
erased value). ``apply_events`` is called directly, as the workers and POST /events do."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from identity.erasure.services import ErasureRequest, erase
from identity.events import services as event_services
from identity.events.messages import Event
from identity.guards.policy import GuardPolicy
from identity.normalize import Identifiers
from identity.storage.db import run_in_transaction, utcnow
from tests.conftest import make_settings, opened_engine
from tests.support.graph import table_snapshot
from tests.support.invariants import assert_consistent

MARTY = "marty@shop.test"
DOC = "doc@shop.test"


def apply(engine: Engine, events: list[Event], policy: GuardPolicy | None = None) -> None:
    run_in_transaction(engine, lambda conn: event_services.apply_events(conn, events, policy))


def ledger(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT event_id, ignored FROM processed_event")).all()
    return {r[0]: r[1] for r in rows}


def contacts(engine: Engine) -> list[tuple[str | None, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT email, phone_number FROM contact WHERE deleted_at IS NULL ORDER BY id")
        ).all()
    return [(r[0], r[1]) for r in rows]


def test_an_event_with_a_blocked_phone_is_applied_without_it(engine: Engine) -> None:
    apply(engine, [Event("ev-blocked", Identifiers(MARTY, "0000000"))])
    assert contacts(engine) == [(MARTY, None)]
    assert ledger(engine) == {"ev-blocked": "phoneNumber:blocked"}
    # Delivered again: the ledger makes it a duplicate, nothing changes.
    apply(engine, [Event("ev-blocked", Identifiers(MARTY, "0000000"))])
    assert contacts(engine) == [(MARTY, None)]


def test_an_event_whose_every_value_is_ignored_is_recorded_with_nothing_written(
    engine: Engine,
) -> None:
    apply(engine, [Event("ev-1", Identifiers(MARTY, "5550101"))])
    before = {k: v for k, v in table_snapshot(engine).items() if k != "processed_event"}
    apply(engine, [Event("ev-junk", Identifiers("no-reply@shop.test", "1234567890"))])
    after = {k: v for k, v in table_snapshot(engine).items() if k != "processed_event"}
    assert after == before  # no contact, link or change
    assert ledger(engine) == {"ev-1": None, "ev-junk": "email:blocked,phoneNumber:blocked"}


def test_a_batch_crosses_the_threshold_once_in_order(engine: Engine) -> None:
    policy = GuardPolicy(generic_threshold=3)
    events = [Event(f"ev-{i}", Identifiers(f"c{i}@shop.test", "5550100")) for i in range(6)]
    apply(engine, events, policy)
    assert contacts(engine) == [
        *[(f"c{i}@shop.test", "5550100") for i in range(3)],
        *[(f"c{i}@shop.test", None) for i in range(3, 6)],
    ]
    notes = ledger(engine)
    assert [notes[f"ev-{i}"] for i in range(6)] == [None] * 3 + ["phoneNumber:generic"] * 3
    with engine.connect() as conn:
        marks = conn.execute(text("SELECT value, partners, cause FROM generic_value")).all()
        kinds = conn.execute(text("SELECT cause FROM change WHERE kind = 'guard.marked'")).scalars()
        assert [tuple(m) for m in marks] == [("5550100", 4, "ev-3")]
        assert list(kinds) == ["ev-3"]


def test_repeats_of_pairs_on_record_never_cross_the_threshold(engine: Engine) -> None:
    """A value may hold more partners than the threshold (stored before the guard, or
    before the threshold was lowered): repeating one of its pairs asserts nothing new, so
    it is no crossing, however many repeats a batch holds; a new partner is one."""
    held = [Event(f"ev-{i}", Identifiers(f"c{i}@shop.test", "5550100")) for i in range(6)]
    apply(engine, held, GuardPolicy(generic_threshold=0))
    policy = GuardPolicy(generic_threshold=3)
    before = table_snapshot(engine)
    apply(engine, [Event(f"again-{e.event_id}", e.identifiers) for e in held], policy)
    after = table_snapshot(engine)
    assert {k: v for k, v in after.items() if k != "processed_event"} == {
        k: v for k, v in before.items() if k != "processed_event"
    }
    assert all(ledger(engine)[f"again-ev-{i}"] is None for i in range(6))
    apply(engine, [Event("ev-new", Identifiers("new@shop.test", "5550100"))], policy)
    assert ledger(engine)["ev-new"] == "phoneNumber:generic"
    with engine.connect() as conn:
        marks = conn.execute(text("SELECT value, partners, cause FROM generic_value")).all()
    assert [tuple(m) for m in marks] == [("5550100", 7, "ev-new")]


def test_a_pair_on_record_is_screened_once_its_value_turns_generic_in_the_batch(
    engine: Engine,
) -> None:
    """A repeat of a pair on record is passed over without screening only while none of
    its values is marked: here an earlier event of the same batch makes the phone generic,
    and the repeats after it are noted as such (those before it are not)."""
    policy = GuardPolicy(generic_threshold=3)
    apply(engine, [Event(f"ev-{i}", Identifiers(f"c{i}@shop.test", "5550100")) for i in range(3)])
    apply(
        engine,
        [
            Event("repeat-before", Identifiers("c0@shop.test", "5550100")),
            Event("crossing", Identifiers("c3@shop.test", "5550100")),
            Event("repeat-after", Identifiers("c1@shop.test", "5550100")),
            Event("repeat-email", Identifiers("c2@shop.test", None)),
        ],
        policy,
    )
    notes = ledger(engine)
    assert notes["repeat-before"] is None
    assert notes["crossing"] == "phoneNumber:generic"
    assert notes["repeat-after"] == "phoneNumber:generic"
    assert notes["repeat-email"] is None
    assert contacts(engine) == [
        *[(f"c{i}@shop.test", "5550100") for i in range(3)],
        ("c3@shop.test", None),
    ]


def test_a_partner_through_the_link_of_another_pair_counts(engine: Engine) -> None:
    """A value's partners are every contact and every link holding it (SPEC "Guards"),
    whatever pairs the batch itself brings: here phone 5550101's partner BIFF exists only
    as the link of an earlier merge, and the next batch's new partner is its third."""
    policy = GuardPolicy(generic_threshold=2)
    biff = "biff@shop.test"
    apply(engine, [Event("ev-1", Identifiers(MARTY, "5550101"))], policy)
    apply(engine, [Event("ev-2", Identifiers(biff, "5550102"))], policy)
    apply(engine, [Event("ev-3", Identifiers(biff, "5550101"))], policy)  # merge: link only
    assert ("biff@shop.test", "5550101") not in contacts(engine)
    apply(engine, [Event("ev-4", Identifiers(DOC, "5550101"))], policy)
    assert ledger(engine)["ev-4"] == "phoneNumber:generic"
    assert (DOC, None) in contacts(engine)
    with engine.connect() as conn:
        marks = conn.execute(text("SELECT value, partners FROM generic_value")).all()
    assert [tuple(m) for m in marks] == [("5550101", 3)]


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """PostgreSQL only: SQLite serializes writers, so it has no row lock to wait for."""
    with opened_engine(make_settings(pg_url)) as engine:
        yield engine


def test_a_batch_of_pairs_on_record_locks_no_root(pg_engine: Engine) -> None:
    """An event whose pair a contact or a link holds changes nothing (rule 4): the batch
    takes its identifier locks, not its cluster's root lock (docs/ARCHITECTURE.md,
    "Event batches and the root locks")."""
    engine = pg_engine
    apply(engine, [Event("ev-1", Identifiers(MARTY, "5550101"))])
    apply(engine, [Event("ev-2", Identifiers(DOC, "5550102"))])
    apply(engine, [Event("ev-3", Identifiers(MARTY, "5550102"))])  # a merge: link (marty, 102)
    repeats = [
        Event("again-1", Identifiers(MARTY, "5550101")),  # held by a contact
        Event("again-3", Identifiers(MARTY, "5550102")),  # held by a link
    ]
    with engine.connect() as holder:
        holder.begin()
        holder.execute(text("SELECT id FROM contact WHERE linked_id IS NULL FOR UPDATE")).all()

        def batch(conn: Connection) -> event_services.BatchResult:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            return event_services.apply_events(conn, repeats)

        result = run_in_transaction(engine, batch, attempts=1)
        holder.rollback()
    assert result.applied == 2
    assert result.inserted == 0


def erase_email(engine: Engine, email: str) -> None:
    run_in_transaction(
        engine,
        lambda conn: erase(
            conn, ErasureRequest(emails=frozenset({email})), configured_key="", cause="erase-1"
        ),
    )


def test_an_event_accepted_before_an_erasure_and_applied_after_it_drops_the_value(
    engine: Engine,
) -> None:
    apply(engine, [Event("ev-1", Identifiers(MARTY, "5550101"))])
    accepted = utcnow() - timedelta(seconds=5)  # in flight while the erasure ran
    erase_email(engine, MARTY)
    assert contacts(engine) == [(None, "5550101")]
    in_flight = Event("ev-2", Identifiers(MARTY, "5550102"), accepted_at=accepted)
    apply(engine, [in_flight])
    assert ledger(engine)["ev-2"] == "email:erased"
    assert contacts(engine) == [(None, "5550101"), (None, "5550102")]
    # Accepted after the erasure: a new assertion, applied in full.
    fresh = Event("ev-3", Identifiers(MARTY, "5550103"), accepted_at=utcnow())
    apply(engine, [fresh])
    assert ledger(engine)["ev-3"] is None
    assert (MARTY, "5550103") in contacts(engine)
    with engine.connect() as conn:
        assert_consistent(conn, [(None, "5550101"), (None, "5550102"), (MARTY, "5550103")])


def test_an_in_flight_event_left_with_nothing_after_an_erasure_is_recorded(
    engine: Engine,
) -> None:
    apply(engine, [Event("ev-1", Identifiers(DOC, None))])
    accepted = utcnow() - timedelta(seconds=5)
    erase_email(engine, DOC)
    apply(engine, [Event("ev-2", Identifiers(DOC, None), accepted_at=accepted)])
    assert ledger(engine)["ev-2"] == "email:erased"
    assert contacts(engine) == []
