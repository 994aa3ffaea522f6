"""Changes of the graph: recorded with the change, sequenced after commit, read in order.

Why the feed never skips (docs/ARCHITECTURE.md, "The change feed"):

A writer inserts its change rows in its own transaction with ``seq`` NULL. Only
:func:`sequence_pending` gives out ``seq``, and it runs in a transaction of its own that
(1) locks the one ``feed_state`` row, so sequencers run one at a time, and (2) then
numbers the change rows *already committed* and not yet numbered, after
``feed_state.last_seq``. A row still uncommitted is invisible to it and is numbered by a
later run, above every seq given out before. So a seq, once visible, is never followed
by a smaller seq becoming visible later: a follower that asks for ``seq > after`` in seq
order sees every change exactly once. On SQLite writers are serialized already; the same
code runs there.

Payloads hold contact ids only, never an email or a phone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from identity.storage.db import draw_ids, int_array, raw_execute, text_array, utcnow
from identity.storage.models import Change, ChangeSubject, FeedState

change: Table = Change.__table__  # type: ignore[assignment]
subject: Table = ChangeSubject.__table__  # type: ignore[assignment]
feed_state: Table = FeedState.__table__  # type: ignore[assignment]

PERSON_CREATED = "person.created"
CONTACT_ADDED = "contact.added"
PERSON_MERGED = "person.merged"
PERSON_SPLIT = "person.split"
CONTACTS_ERASED = "contacts.erased"
GUARD_MARKED = "guard.marked"
GUARD_CLEARED = "guard.cleared"
KINDS = (
    PERSON_CREATED,
    CONTACT_ADDED,
    PERSON_MERGED,
    PERSON_SPLIT,
    CONTACTS_ERASED,
    GUARD_MARKED,
    GUARD_CLEARED,
)

#: Changes numbered by one sequencer run; a follower asks again for the rest.
SEQUENCE_BATCH = 10_000


@dataclass(frozen=True)
class NewChange:
    kind: str
    payload: dict[str, Any]
    cause: str | None
    #: contact ids the change is about (history lookups), never values
    subjects: tuple[int, ...] = field(default=())


def person_created(contact_id: int, cause: str | None) -> NewChange:
    return NewChange(
        PERSON_CREATED,
        {"primaryContactId": contact_id, "contactId": contact_id},
        cause,
        (contact_id,),
    )


def contact_added(primary_id: int, contact_id: int, cause: str | None) -> NewChange:
    return NewChange(
        CONTACT_ADDED,
        {"primaryContactId": primary_id, "contactId": contact_id},
        cause,
        (primary_id, contact_id),
    )


def person_merged(
    primary_id: int, absorbed: Sequence[int], moved: Iterable[int], cause: str | None
) -> NewChange:
    return NewChange(
        PERSON_MERGED,
        {
            "primaryContactId": primary_id,
            "absorbedPrimaryIds": sorted(absorbed),
            "movedContactIds": sorted(set(moved)),
        },
        cause,
        (primary_id, *absorbed),
    )


def record(conn: Connection, changes: Sequence[NewChange], at: datetime | None = None) -> None:
    """Write ``changes`` (unsequenced) and their subjects in the caller's transaction."""
    if not changes:
        return
    at = at or utcnow()
    if conn.dialect.name == "postgresql":
        _pg_record(conn, changes, at)
        return
    ids = (
        conn.execute(
            insert(change).returning(change.c.id, sort_by_parameter_order=True),
            [{"kind": c.kind, "payload": c.payload, "at": at, "cause": c.cause} for c in changes],
        )
        .scalars()
        .all()
    )
    rows = [
        {"change_id": change_id, "contact_id": contact_id}
        for change_id, c in zip(ids, changes, strict=True)
        for contact_id in sorted(set(c.subjects))
    ]
    if rows:
        conn.execute(insert(subject), rows)


def _pg_record(conn: Connection, changes: Sequence[NewChange], at: datetime) -> None:
    """``record`` on PostgreSQL in two messages whatever the count: the ids are drawn from
    the table's sequence first (ascending, in the order of ``changes``, as the portable
    path's ``RETURNING`` in parameter order gives them), then every row and every subject
    goes in as one array a column (no per-row statement to compile)."""
    ids = draw_ids(conn, "change", len(changes))
    subjects = [
        (change_id, contact_id)
        for change_id, c in zip(ids, changes, strict=True)
        for contact_id in sorted(set(c.subjects))
    ]
    raw_execute(
        conn,
        "INSERT INTO change (id, kind, payload, at, cause)"
        " SELECT i, k, p, %(at)s, c FROM unnest(%(i)s::bigint[], %(k)s::text[],"
        " %(p)s::json[], %(c)s::text[]) AS x(i, k, p, c);"
        "INSERT INTO change_subject (change_id, contact_id)"
        " SELECT * FROM unnest(%(si)s::bigint[], %(sc)s::integer[])",
        {  # one array literal a column (db.text_array), not a list adapted element-wise
            "i": int_array(ids),
            "k": text_array([c.kind for c in changes]),
            "p": text_array([json.dumps(c.payload) for c in changes]),
            "c": text_array([c.cause for c in changes]),
            "at": at,
            "si": int_array([s for s, _ in subjects]),
            "sc": int_array([c for _, c in subjects]),
        },
    )


# --- Sequencing and reading -----------------------------------------------------------


def _state_for_update(conn: Connection) -> tuple[int, int]:
    query = select(feed_state.c.last_seq, feed_state.c.pruned_through).where(feed_state.c.id == 1)
    row = conn.execute(query.with_for_update()).first()
    if row is None:
        # First run (or emptied tables): start after whatever is numbered already. Two
        # first sequencers may get here at once (the relay and a GET /changes): the second
        # INSERT waits for the first's row and then does nothing, instead of failing on it.
        top = conn.execute(text("SELECT coalesce(max(seq), 0) FROM change")).scalar_one()
        module = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            module.insert(feed_state)
            .values(id=1, last_seq=top, pruned_through=0)
            .on_conflict_do_nothing()
        )
        row = conn.execute(query.with_for_update()).one()
    return int(row.last_seq), int(row.pruned_through)


def has_pending(conn: Connection) -> bool:
    return (
        conn.execute(select(change.c.id).where(change.c.seq.is_(None)).limit(1)).first() is not None
    )


def sequence_pending(conn: Connection, *, limit: int = SEQUENCE_BATCH) -> int:
    """Number the committed, unnumbered changes in id order; returns how many.

    Run in a transaction of its own (the caller's unit of work), never inside a writer's.
    """
    last_seq, _ = _state_for_update(conn)
    # A new statement, so a new snapshot on PostgreSQL (READ COMMITTED): it sees every
    # row numbered by the sequencer we may have waited for on the state row.
    ids = (
        conn.execute(
            select(change.c.id).where(change.c.seq.is_(None)).order_by(change.c.id).limit(limit)
        )
        .scalars()
        .all()
    )
    if not ids:
        return 0
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(
                "UPDATE change SET seq = :base + n.ord"
                " FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS n(id, ord)"
                " WHERE change.id = n.id"
            ),
            {"ids": list(ids), "base": last_seq},
        )
    else:
        conn.execute(
            update(change).where(change.c.id == bindparam("cid")).values(seq=bindparam("cseq")),
            [{"cid": cid, "cseq": last_seq + n} for n, cid in enumerate(ids, start=1)],
        )
    conn.execute(
        update(feed_state).where(feed_state.c.id == 1).values(last_seq=last_seq + len(ids))
    )
    return len(ids)


@dataclass(frozen=True)
class ChangeRecord:
    seq: int | None
    kind: str
    at: datetime
    cause: str | None
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "at": self.at.isoformat(),
            "cause": self.cause,
            "payload": self.payload,
        }


class FeedGap(Exception):
    """``after`` lies below what retention kept: the follower must start over."""

    def __init__(self, oldest_seq: int) -> None:
        super().__init__(f"changes after this seq were pruned; the oldest kept is {oldest_seq}")
        self.oldest_seq = oldest_seq


def _record(r: Any) -> ChangeRecord:
    return ChangeRecord(r.seq, r.kind, r.at, r.cause, r.payload)


_COLUMNS = (change.c.seq, change.c.kind, change.c.at, change.c.cause, change.c.payload)


def read_after(conn: Connection, *, after: int, limit: int) -> list[ChangeRecord]:
    """Numbered changes with ``seq > after``, in seq order; :class:`FeedGap` when pruned."""
    state = conn.execute(select(feed_state.c.pruned_through).where(feed_state.c.id == 1)).first()
    pruned_through = int(state.pruned_through) if state is not None else 0
    if after < pruned_through:
        raise FeedGap(pruned_through + 1)
    rows = conn.execute(
        select(*_COLUMNS).where(change.c.seq > after).order_by(change.c.seq).limit(limit)
    ).all()
    return [_record(r) for r in rows]


def history(conn: Connection, contact_ids_query: Any, *, limit: int) -> list[ChangeRecord]:
    """Changes about any contact the query selects, oldest first (by write order)."""
    ids = (
        select(subject.c.change_id)
        .where(subject.c.contact_id.in_(contact_ids_query))
        .distinct()
        .scalar_subquery()
    )
    rows = conn.execute(
        select(*_COLUMNS).where(change.c.id.in_(ids)).order_by(change.c.id).limit(limit)
    ).all()
    return [_record(r) for r in rows]


def prune(conn: Connection, *, older_than: timedelta) -> int:
    """Delete numbered changes older than the retention; 410 below them from now on."""
    last_seq, pruned_through = _state_for_update(conn)
    cutoff = utcnow() - older_than
    top = conn.execute(
        select(change.c.seq)
        .where(change.c.seq.is_not(None), change.c.at < cutoff)
        .order_by(change.c.seq.desc())
        .limit(1)
    ).scalar()
    if top is None or top <= pruned_through:
        return 0
    doomed = select(change.c.id).where(change.c.seq <= top).scalar_subquery()
    conn.execute(delete(subject).where(subject.c.change_id.in_(doomed)))
    count = conn.execute(delete(change).where(change.c.seq <= top)).rowcount
    conn.execute(update(feed_state).where(feed_state.c.id == 1).values(pruned_through=top))
    return int(count or 0)


def oldest_seq(conn: Connection) -> int:
    state = conn.execute(select(feed_state.c.pruned_through).where(feed_state.c.id == 1)).first()
    return (int(state.pruned_through) if state is not None else 0) + 1
