"""plan_batch (the batch form of decide) equals applying decide() event by event."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from identity.batch import NewRef, plan_batch
from identity.normalize import Identifiers
from identity.reconcile import Insert, Row, decide

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)


def apply_sequentially(rows: list[Row], event: Identifiers, now: datetime) -> list[Row]:
    """The reference: what services.apply_identifiers does, over a list instead of a table."""
    matching = [
        r
        for r in rows
        if (event.email is not None and r.email == event.email)
        or (event.phone is not None and r.phone == event.phone)
    ]
    root_ids = {r.linked_id if r.linked_id is not None else r.id for r in matching}
    roots = [r for r in rows if r.id in root_ids]
    members = [r for r in rows if r.id in root_ids or r.linked_id in root_ids]
    decision = decide(event, roots, members)
    out = [
        replace(r, linked_id=decision.primary_id)
        if r.id in decision.demote or r.linked_id in decision.demote
        else r
        for r in rows
    ]
    new_id = max((r.id for r in rows), default=0) + 1
    if decision.insert is Insert.PRIMARY:
        out.append(Row(new_id, event.email, event.phone, None, now))
    elif decision.insert is Insert.SECONDARY:
        winner = next(r for r in roots if r.id == decision.primary_id)
        created = max(now, winner.created_at)
        out.append(Row(new_id, event.email, event.phone, winner.id, created))
    return out


def apply_plan(rows: list[Row], events: list[Identifiers], now: datetime) -> list[Row]:
    """What event_services.apply_events writes, over a list instead of a table."""
    keys_e = {e.email for e in events if e.email is not None}
    keys_p = {e.phone for e in events if e.phone is not None}
    matching = [r for r in rows if r.email in keys_e or r.phone in keys_p]
    root_ids = {r.linked_id if r.linked_id is not None else r.id for r in matching}
    roots = [r for r in rows if r.id in root_ids]
    plan = plan_batch(events, matching, roots, now)
    first_id = max((r.id for r in rows), default=0) + 1

    def real(ref: int | NewRef) -> int:
        return first_id + ref.index if isinstance(ref, NewRef) else ref

    out = [
        replace(r, linked_id=real(plan.relinks[r.id]))
        if r.id in plan.relinks
        else replace(r, linked_id=real(plan.relinks[r.linked_id]))
        if r.linked_id in plan.relinks
        else r
        for r in rows
    ]
    for new in plan.new_rows:
        linked = None if new.is_primary else real(new.root)
        out.append(Row(first_id + new.index, new.email, new.phone, linked, new.created_at))
    return out


emails = st.sampled_from(["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io", None])
phones = st.sampled_from(["111", "222", "333", "444", "555", None])
pairs = st.tuples(emails, phones).filter(lambda p: p != (None, None))
identifiers = pairs.map(lambda p: Identifiers(email=p[0], phone=p[1]))
# Existing rows may be older than NOW, as old as it, or newer (clock skew between servers).
offsets = st.sampled_from([-3, -2, -1, 0, 1])


@settings(max_examples=400, deadline=None)
@given(
    history=st.lists(st.tuples(identifiers, offsets), max_size=12),
    batch=st.lists(identifiers, min_size=1, max_size=14),
)
def test_plan_equals_sequential_decide(
    history: list[tuple[Identifiers, int]], batch: list[Identifiers]
) -> None:
    rows: list[Row] = []
    for event, offset in history:
        rows = apply_sequentially(rows, event, NOW + timedelta(minutes=offset))
    expected = rows
    for event in batch:
        expected = apply_sequentially(expected, event, NOW)
    assert sorted(apply_plan(rows, batch, NOW), key=lambda r: r.id) == expected


def test_new_secondary_links_to_new_primary_of_same_batch() -> None:
    a = Identifiers("a@x.io", "111")
    b = Identifiers("b@x.io", "111")
    plan = plan_batch([a, b], [], [], NOW)
    assert [(n.index, n.root) for n in plan.new_rows] == [(0, NewRef(0)), (1, NewRef(0))]
    assert plan.new_rows[0].is_primary and not plan.new_rows[1].is_primary
    assert plan.relinks == {}


def test_merge_of_existing_roots_relinks_the_newer_to_the_older() -> None:
    older = Row(1, "g@x.io", "919191", None, NOW - timedelta(days=2))
    newer = Row(2, "b@x.io", "717171", None, NOW - timedelta(days=1))
    plan = plan_batch([Identifiers("g@x.io", "717171")], [older, newer], [older, newer], NOW)
    assert plan.relinks == {2: 1}
    assert plan.new_rows == []  # rule 3 brings nothing new: no insert


def test_new_primary_demoted_later_in_the_batch_becomes_a_secondary() -> None:
    old = Row(7, "old@x.io", None, None, NOW - timedelta(days=1))
    plan = plan_batch(
        [Identifiers("new@x.io", "555"), Identifiers("old@x.io", "555")], [old], [old], NOW
    )
    assert [(n.email, n.root) for n in plan.new_rows] == [("new@x.io", 7)]
    assert plan.relinks == {}


def test_rows_of_unknown_roots_are_refused() -> None:
    orphan = Row(3, "o@x.io", None, 99, NOW)
    try:
        plan_batch([Identifiers("o@x.io", None)], [orphan], [], NOW)
    except ValueError as error:
        assert "99" in str(error)
    else:
        raise AssertionError("expected ValueError")
