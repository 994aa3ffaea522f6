"""Many events at once, as a pure plan (the batch form of ``reconcile.decide``).

``plan_batch`` replays a batch of identifier pairs, in order, over the rows that
hold any of the batch's identifiers, and returns the difference to write: the
new rows and the re-links of demoted roots. Its result equals applying
``reconcile.decide`` to each pair one after the other (a unit test proves it), but
it needs only the matching rows and their roots, not whole clusters: an
identifier is "held by a touched cluster" exactly when some matching row holds it.

New rows are numbered ``0, 1, 2, ...`` in creation order; the caller gives them real
ids afterwards, which must be larger than every id in ``rows`` (a sequence or
``max(id) + 1`` does that), so "older" between an existing and a new row with the
same ``created_at`` is decided the way the database will see it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from identity.graph.reconcile import Row, needs_link
from identity.normalize import Identifiers


class Held(Protocol):
    """A live row holding a value of the batch, as far as the plan cares: which values it
    holds and which cluster it is in (a ``reconcile.Row`` is one; the event path reads
    plain tuples of these four columns, ``events.services.HeldRow``)."""

    @property
    def id(self) -> int: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def linked_id(self) -> int | None: ...


@dataclass(frozen=True)
class NewRef:
    """The ``index``-th row the batch inserts (its id is not known yet)."""

    index: int


Ref = int | NewRef  # an existing row id, or a new row


@dataclass(frozen=True)
class NewRow:
    index: int
    email: str | None
    phone: str | None
    created_at: datetime
    root: Ref  # the final primary of its cluster; the row itself when it is a primary

    @property
    def is_primary(self) -> bool:
        return self.root == NewRef(self.index)


@dataclass(frozen=True)
class ClusterOf:
    """Every contact an existing root had before the batch (known once its re-link runs)."""

    root: int


Member = NewRef | ClusterOf


@dataclass(frozen=True)
class PlannedChange:
    """One change of the feed, caused by the ``event``-th event of the batch."""

    event: int
    kind: str  # "person.created" | "contact.added" | "person.merged"
    primary: Ref
    contact: Ref | None = None  # created / added
    absorbed: tuple[Ref, ...] = ()  # merged
    moved: tuple[Member, ...] = ()  # merged: whose primary changed


@dataclass
class BatchPlan:
    new_rows: list[NewRow] = field(default_factory=list)
    #: existing root id -> its final primary (an existing id or a new row); every row
    #: linked to a demoted root follows it to that primary.
    relinks: dict[int, Ref] = field(default_factory=dict)
    #: (event index, email, phone): the links to record (SPEC "The graph's edges")
    links: list[tuple[int, str, str]] = field(default_factory=list)
    changes: list[PlannedChange] = field(default_factory=list)


def plan_batch(
    events: Sequence[Identifiers],
    rows: Iterable[Held],
    roots: Iterable[Row],
    now: datetime,
    linked: Iterable[tuple[str, str]] = (),
) -> BatchPlan:
    """Replay ``events`` in order over the live ``rows`` holding any of their identifiers.

    ``roots`` are the primaries of those rows' clusters (locked by the caller);
    ``linked``: the batch's (email, phone) pairs that a link already holds.
    """
    age: dict[Ref, tuple[datetime, int, int]] = {}
    created: dict[Ref, datetime] = {}
    parent: dict[Ref, Ref] = {}
    for root in roots:
        age[root.id] = (root.created_at, 0, root.id)
        created[root.id] = root.created_at
        parent[root.id] = root.id
    by_email: dict[str, Ref] = {}
    by_phone: dict[str, Ref] = {}
    held_pairs: set[tuple[str | None, str | None]] = set(linked)
    for row in rows:
        held_pairs.add((row.email, row.phone))
        root_id = row.linked_id if row.linked_id is not None else row.id
        if root_id not in parent:
            raise ValueError(f"row {row.id} belongs to root {root_id}, which was not given")
        if row.email is not None:
            by_email[row.email] = root_id
        if row.phone is not None:
            by_phone[row.phone] = root_id

    def find(ref: Ref) -> Ref:
        top = ref
        while parent[top] != top:
            top = parent[top]
        while parent[ref] != top:  # path compression
            parent[ref], ref = top, parent[ref]
        return top

    plan = BatchPlan()
    new_rows: list[tuple[int, Identifiers, datetime]] = []
    members: dict[Ref, list[Member]] = {}

    def members_of(root: Ref) -> list[Member]:
        if root not in members:
            members[root] = [ClusterOf(root)] if isinstance(root, int) else []
        return members[root]

    def add_row(identifiers: Identifiers, created_at: datetime, cluster: Ref | None) -> Ref:
        index = len(new_rows)
        ref = NewRef(index)
        new_rows.append((index, identifiers, created_at))
        age[ref] = (created_at, 1, index)  # after every existing row of the same instant
        created[ref] = created_at
        parent[ref] = ref if cluster is None else cluster
        members_of(ref if cluster is None else cluster).append(ref)
        held_pairs.add((identifiers.email, identifiers.phone))
        return ref

    for number, identifiers in enumerate(events):
        email, phone = identifiers.email, identifiers.phone
        touched: set[Ref] = set()
        if email is not None and email in by_email:
            touched.add(find(by_email[email]))
        if phone is not None and phone in by_phone:
            touched.add(find(by_phone[phone]))
        if not touched:  # rule 1
            winner = add_row(identifiers, now, None)
            plan.changes.append(PlannedChange(number, "person.created", winner, winner))
        else:
            winner = min(touched, key=age.__getitem__)
            losers = sorted(touched - {winner}, key=age.__getitem__)
            moved: list[Member] = []
            for loser in losers:  # rule 3
                parent[loser] = winner
                moved.extend(members_of(loser))
                del members[loser]
            if losers:
                members_of(winner).extend(moved)
                plan.changes.append(
                    PlannedChange(
                        number, "person.merged", winner, absorbed=tuple(losers), moved=tuple(moved)
                    )
                )
            brings_new = (email is not None and email not in by_email) or (
                phone is not None and phone not in by_phone
            )
            if brings_new:  # rule 2; never older than its primary (I2)
                added = add_row(identifiers, max(now, created[winner]), winner)
                plan.changes.append(PlannedChange(number, "contact.added", winner, added))
            if needs_link(
                identifiers,
                merges=bool(losers),
                inserts=brings_new,
                held_pair=(email, phone) in held_pairs,
            ):
                assert email is not None and phone is not None
                plan.links.append((number, email, phone))
                held_pairs.add((email, phone))
        if email is not None:
            by_email.setdefault(email, winner)
        if phone is not None:
            by_phone.setdefault(phone, winner)

    for index, identifiers, created_at in new_rows:
        plan.new_rows.append(
            NewRow(index, identifiers.email, identifiers.phone, created_at, find(NewRef(index)))
        )
    for ref in list(parent):
        if isinstance(ref, int) and parent[ref] != ref:
            plan.relinks[ref] = find(ref)
    return plan
