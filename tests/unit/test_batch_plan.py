"""plan_batch (the batch form of decide) equals applying decide() event by event: the
rows it writes, the links it records and the changes it puts in the feed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from identity.batch import BatchPlan, ClusterOf, NewRef, plan_batch
from identity.normalize import Identifiers
from identity.reconcile import Insert, Row, decide

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)

#: (kind, primary, contact or None, absorbed primaries, moved contacts), ids resolved
ChangeTuple = tuple[str, int, int | None, tuple[int, ...], tuple[int, ...]]


@dataclass
class Sequential:
    """The reference, one event at a time: rows, links (SPEC "The graph's edges") and the
    changes of the feed, as services.apply_identifiers writes them."""

    rows: list[Row] = field(default_factory=list)
    #: (event number, email, phone) in the order recorded
    links: list[tuple[int, str, str]] = field(default_factory=list)
    changes: list[tuple[int, ChangeTuple]] = field(default_factory=list)

    def linked(self) -> set[tuple[str, str]]:
        return {(e, p) for _, e, p in self.links}

    def apply(self, event: Identifiers, now: datetime, number: int = 0) -> None:
        rows = self.rows
        matching = [
            r
            for r in rows
            if (event.email is not None and r.email == event.email)
            or (event.phone is not None and r.phone == event.phone)
        ]
        root_ids = {r.linked_id if r.linked_id is not None else r.id for r in matching}
        roots = [r for r in rows if r.id in root_ids]
        members = [r for r in rows if r.id in root_ids or r.linked_id in root_ids]
        pair = (event.email, event.phone)
        pair_linked = pair in self.linked()
        decision = decide(event, roots, members, pair_linked=pair_linked)
        # The link rule, written out from SPEC.md rather than taken from the decision:
        # rule 3 always; rule 4 only when no live row and no link holds the exact pair;
        # never for a one-identifier event (nor for rules 1 and 2, whose row holds it).
        held = any((r.email, r.phone) == pair for r in rows) or pair_linked
        wants_link = (
            event.email is not None
            and event.phone is not None
            and decision.insert is Insert.NOTHING
            and (bool(decision.demote) or not held)
        )
        assert decision.link == wants_link, (event, decision)
        if decision.demote:
            assert decision.primary_id is not None
            moved = tuple(sorted(r.id for r in rows if (r.linked_id or r.id) in decision.demote))
            merged = ("person.merged", decision.primary_id, None, decision.demote, moved)
            self.changes.append((number, merged))
        out = [
            replace(r, linked_id=decision.primary_id)
            if r.id in decision.demote or r.linked_id in decision.demote
            else r
            for r in rows
        ]
        new_id = max((r.id for r in rows), default=0) + 1
        if decision.insert is Insert.PRIMARY:
            out.append(Row(new_id, event.email, event.phone, None, now))
            self.changes.append((number, ("person.created", new_id, new_id, (), ())))
        elif decision.insert is Insert.SECONDARY:
            winner = next(r for r in roots if r.id == decision.primary_id)
            created = max(now, winner.created_at)
            out.append(Row(new_id, event.email, event.phone, winner.id, created))
            self.changes.append((number, ("contact.added", winner.id, new_id, (), ())))
        if wants_link:
            assert event.email is not None and event.phone is not None
            self.links.append((number, event.email, event.phone))
        self.rows = out


def apply_sequentially(rows: list[Row], event: Identifiers, now: datetime) -> list[Row]:
    """The reference: what services.apply_identifiers does, over a list instead of a table."""
    state = Sequential(rows=list(rows))
    state.apply(event, now)
    return state.rows


def make_plan(
    rows: list[Row],
    events: list[Identifiers],
    now: datetime,
    links: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
) -> BatchPlan:
    """What event_services.apply_events plans: the matching rows, their roots, and which
    of the batch's pairs no matching row holds but a link does."""
    keys_e = {e.email for e in events if e.email is not None}
    keys_p = {e.phone for e in events if e.phone is not None}
    matching = [r for r in rows if r.email in keys_e or r.phone in keys_p]
    root_ids = {r.linked_id if r.linked_id is not None else r.id for r in matching}
    roots = [r for r in rows if r.id in root_ids]
    held = {(r.email, r.phone) for r in matching}
    pairs = {(e.email, e.phone) for e in events if e.email is not None and e.phone is not None}
    linked = [p for p in pairs if p not in held and p in links]
    return plan_batch(events, matching, roots, now, linked)  # type: ignore[arg-type]


def apply_plan(rows: list[Row], events: list[Identifiers], now: datetime) -> list[Row]:
    """What event_services.apply_events writes, over a list instead of a table."""
    plan = make_plan(rows, events, now)
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


def resolved_changes(plan: BatchPlan, rows: list[Row]) -> list[tuple[int, ChangeTuple]]:
    """plan.changes with real ids, as event_services._resolve gives them: new rows numbered
    after every existing id, ``ClusterOf(root)`` expanded to the root's contacts before the
    batch."""
    first_id = max((r.id for r in rows), default=0) + 1

    def real(ref: int | NewRef) -> int:
        return first_id + ref.index if isinstance(ref, NewRef) else ref

    def contacts(member: NewRef | ClusterOf) -> list[int]:
        if isinstance(member, NewRef):
            return [real(member)]
        return [r.id for r in rows if (r.linked_id or r.id) == member.root]

    out: list[tuple[int, ChangeTuple]] = []
    for ch in plan.changes:
        moved = tuple(sorted({i for m in ch.moved for i in contacts(m)}))
        absorbed = tuple(sorted(real(a) for a in ch.absorbed))
        contact = None if ch.contact is None else real(ch.contact)
        out.append((ch.event, (ch.kind, real(ch.primary), contact, absorbed, moved)))
    return out


def replay_changes(start: dict[int, int], changes: list[tuple[int, ChangeTuple]]) -> dict[int, int]:
    """contact id -> primary id, from the primaries before the batch and its changes alone
    (the same reading as tests/support/graph.replay)."""
    primary = dict(start)
    for _, (kind, root, contact, absorbed, _moved) in changes:
        if kind in ("person.created", "contact.added"):
            assert contact is not None
            primary[contact] = root
        else:
            for c, r in list(primary.items()):
                if r in absorbed:
                    primary[c] = root
    return primary


def primaries(rows: list[Row]) -> dict[int, int]:
    return {r.id: r.linked_id or r.id for r in rows}


@settings(max_examples=400, deadline=None)
@given(
    history=st.lists(st.tuples(identifiers, offsets), max_size=12),
    batch=st.lists(identifiers, min_size=1, max_size=14),
)
def test_planned_links_and_changes_equal_sequential_ones(
    history: list[tuple[Identifiers, int]], batch: list[Identifiers]
) -> None:
    before = Sequential()
    for number, (event, offset) in enumerate(history):
        before.apply(event, NOW + timedelta(minutes=offset), -1 - number)
    rows, links = list(before.rows), before.linked()
    after = Sequential(rows=list(rows), links=list(before.links))
    for number, event in enumerate(batch):
        after.apply(event, NOW, number)

    plan = make_plan(rows, batch, NOW, links)
    assert plan.links == after.links[len(before.links) :]
    # Every link the batch records is an assertion of its own event, recorded once.
    assert all((batch[n].email, batch[n].phone) == (e, p) for n, e, p in plan.links)
    assert len({(e, p) for _, e, p in plan.links} | links) == len(plan.links) + len(links)
    changes = resolved_changes(plan, rows)
    assert changes == after.changes
    assert replay_changes(primaries(rows), changes) == primaries(after.rows)


def test_rule4_links_a_pair_no_row_holds_once_and_never_a_single_value() -> None:
    # One cluster: 1 = (a, 111), 2 = (a, 222), 3 = (b, 222). No row holds (b, 111).
    day = NOW - timedelta(days=1)
    rows = [
        Row(1, "a@x.io", "111", None, day),
        Row(2, "a@x.io", "222", 1, day),
        Row(3, "b@x.io", "222", 1, day),
    ]
    b, b111 = Identifiers("b@x.io", None), Identifiers("b@x.io", "111")
    held = [Identifiers("a@x.io", "222"), Identifiers("b@x.io", "222"), b]
    assert make_plan(rows, [*held, b111, b111, b, b111], NOW).links == [(3, "b@x.io", "111")]
    assert make_plan(rows, [*held, b111], NOW, {("b@x.io", "111")}).links == []
    assert make_plan(rows, held, NOW).links == []
    assert make_plan(rows, [*held, b111], NOW).new_rows == []  # rule 4 writes no contact


def test_a_merge_always_records_its_pair() -> None:
    older = Row(1, "g@x.io", "919191", None, NOW - timedelta(days=2))
    newer = Row(2, "b@x.io", "717171", None, NOW - timedelta(days=1))
    merge = Identifiers("g@x.io", "717171")
    plan = make_plan([older, newer], [merge, merge], NOW)
    assert plan.links == [(0, "g@x.io", "717171")]  # the repeat is held by the link
    assert [(c.kind, c.primary, c.absorbed) for c in plan.changes] == [("person.merged", 1, (2,))]


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
