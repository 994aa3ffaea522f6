"""Event use cases: apply a batch set-based, the durable inbox, and dead letters.

Each function takes an open connection; the caller owns the transaction
(``identity.storage.db.run_in_transaction``). See docs/ASYNC.md for the data flow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from identity.errors import TransientConflict
from identity.events.messages import Event
from identity.feed import changes as feed
from identity.graph.batch import ClusterOf, NewRef, PlannedChange, Ref, plan_batch
from identity.graph.links import links_touching, record_links
from identity.graph.reconcile import Row
from identity.graph.services import MAX_ROOT_CHASES
from identity.guards.policy import (
    GuardPolicy,
    Marks,
    Value,
    partners_on_record,
    record_ignored,
    screen,
    values_of,
)
from identity.guards.store import load_marks, mark_generic
from identity.normalize import Identifiers
from identity.storage import prepared
from identity.storage.db import draw_ids, int_array, raw_execute, text_array, utcnow
from identity.storage.locking import advisory_key, identifier_keys, lock_keys
from identity.storage.models import Contact, DeadLetter, EventInbox, ProcessedEvent

contact: Table = Contact.__table__  # type: ignore[assignment]
ledger: Table = ProcessedEvent.__table__  # type: ignore[assignment]
inbox: Table = EventInbox.__table__  # type: ignore[assignment]
dead_letter: Table = DeadLetter.__table__  # type: ignore[assignment]
c = contact.c
_LIVE = c.deleted_at.is_(None)

#: Events applied in one transaction. Each takes up to two advisory locks, and the
#: PostgreSQL lock table holds max_locks_per_transaction x max_connections entries
#: in all (6,400 by default), shared by every worker and request.
MAX_EVENTS_PER_TRANSACTION = 500

T = TypeVar("T")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class BatchResult:
    applied: int  # events applied now
    duplicates: int  # events skipped: already in the ledger, or repeated in the batch
    inserted: int  # contact rows inserted
    relinked_roots: int  # primaries demoted by merges


def _dialect_insert(conn: Connection, table: Table) -> Any:
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def _record_in_ledger(conn: Connection, event_ids: list[str], now: datetime) -> set[str]:
    """Insert the batch's ids into the ledger and take them out of the inbox, in the
    transaction that applies them; returns the ids that were not in the ledger yet.

    A concurrent transaction applying the same event holds its ledger row until it
    ends; ON CONFLICT waits for it, then skips the id if it committed.
    """
    ids = sorted(event_ids)
    if conn.dialect.name == "postgresql":
        # One message, one array parameter: the statement text (and its plan) is the same
        # for every batch.
        rows = raw_execute(
            conn,
            "DELETE FROM event_inbox WHERE event_id = ANY(%(ids)s::text[]);"
            "INSERT INTO processed_event (event_id, applied_at)"
            " SELECT unnest(%(ids)s::text[]), %(now)s"
            " ON CONFLICT DO NOTHING RETURNING event_id",
            {"ids": text_array(ids), "now": now},
        )
        return {r[0] for r in rows}
    stmt = (
        sqlite.insert(ledger)
        .values([{"event_id": e, "applied_at": now} for e in ids])
        .on_conflict_do_nothing()
        .returning(ledger.c.event_id)
    )
    fresh = set(conn.execute(stmt).scalars())
    conn.execute(delete(inbox).where(inbox.c.event_id.in_(ids)))
    return fresh


def _lock_identifiers(conn: Connection, keys: set[str]) -> None:
    """``locking.lock_keys`` for a whole batch: the same sorted advisory locks, one parameter.

    The function scan yields the sorted array in order, so the locks are taken in the
    same order as every other transaction takes them.
    """
    if conn.dialect.name != "postgresql":
        lock_keys(conn, keys)  # nothing to lock (SQLite serializes writers)
        return
    ids = sorted({advisory_key(k) for k in keys})
    prepared.run(conn, _LOCK_KEYS_X.on(conn), {"ids": int_array(ids)})


def _one_of(conn: Connection, column: Any, values: Sequence[Any]) -> Any:
    """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter, one cached plan."""
    if conn.dialect.name == "postgresql":
        return column == any_(literal(list(values), ARRAY(column.type)))
    return column.in_(list(values))


# The batch's rows and roots on PostgreSQL: plain SQL with one array parameter per list,
# sent on the raw cursor (``db.raw_execute``) and read as tuples. Building SQLAlchemy
# ``Row`` objects for the ~2,000 rows a 500-event batch touches, twice (before and after
# the root locks), was about a fifth of apply_events' Python time.
_PG_MATCHING = """
SELECT id, email, phone_number, linked_id FROM contact
WHERE deleted_at IS NULL
  AND (email = ANY(%(emails)s::text[]) OR phone_number = ANY(%(phones)s::text[]))"""
_PG_LOCK_ROOTS = """
SELECT id, email, phone_number, linked_id, created_at FROM contact
WHERE deleted_at IS NULL AND id = ANY(%(roots)s::integer[]) ORDER BY id FOR UPDATE"""

# Prepared once per connection (identity.storage.prepared): planning these, each with
# arrays of a thousand values, cost PostgreSQL about as much as running them.
_MATCHING_X = prepared.Prepared(
    "events_matching", _PG_MATCHING, {"emails": "text[]", "phones": "text[]"}
)
_LOCK_ROOTS_X = prepared.Prepared("events_lock_roots", _PG_LOCK_ROOTS, {"roots": "integer[]"})
_LOCK_KEYS_X = prepared.Prepared(
    "events_lock_keys",
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%(ids)s::bigint[]) AS k",
    {"ids": "bigint[]"},
)

#: (id, email, phone, linked_id) of a live contact holding a value of the batch, or
#: (id, email, phone, linked_id, created_at) of a root
RowTuple = tuple[Any, ...]


class HeldRow(NamedTuple):
    """A live row holding a value of the batch (``graph.batch.Held``): the tuple as read,
    named. Its age is not read: only the roots' ages decide (~1,000 timestamps a batch
    fewer to parse)."""

    id: int
    email: str | None
    phone: str | None
    linked_id: int | None


def _root_row(r: RowTuple) -> Row:
    return Row(id=r[0], email=r[1], phone=r[2], linked_id=r[3], created_at=r[4])


def _matching(conn: Connection, emails: list[str], phones: list[str]) -> list[RowTuple]:
    """The live rows holding any of ``emails`` or ``phones``, as (id, email, phone,
    linked_id) tuples."""
    if conn.dialect.name == "postgresql":
        arrays = {"emails": text_array(emails), "phones": text_array(phones)}
        return prepared.run(conn, _MATCHING_X.on(conn), arrays)
    matches = []
    if emails:
        matches.append(c.email.in_(emails))
    if phones:
        matches.append(c.phone_number.in_(phones))
    if not matches:
        return []
    columns = (c.id, c.email, c.phone_number, c.linked_id)
    return [tuple(r) for r in conn.execute(select(*columns).where(_LIVE, or_(*matches)))]


def _lock_batch_roots(
    conn: Connection, emails: list[str], phones: list[str], rows: list[RowTuple]
) -> tuple[list[HeldRow], list[Row]]:
    """The live rows holding any of the identifiers, and their roots locked FOR UPDATE.

    ``rows``: those rows as read earlier in the transaction (under the identifier locks,
    before the root locks): they only say which roots to lock. Same protocol as
    ``services.lock_roots``: lock in id order, re-check that each locked row is still a
    root (a concurrent merge sends us round again), then read the rows again now that
    the roots are locked, and go round again unless they name exactly the locked roots.
    """
    # On PostgreSQL the root locks are taken in a savepoint, rolled back when a root is
    # stale, so a chase never holds row locks that the merge it chases waits for
    # (see pg_identify.lock_and_find_roots). SQLite serializes writers: no chase.
    pg = conn.dialect.name == "postgresql"

    def roots_of(rows: list[RowTuple]) -> list[int]:
        return sorted({r[3] if r[3] is not None else r[0] for r in rows})

    for _ in range(MAX_ROOT_CHASES):
        root_ids = roots_of(rows)
        if not root_ids:
            return [], []
        if pg:
            lock = "SAVEPOINT batch_roots;" + _LOCK_ROOTS_X.on(conn)
            roots = prepared.run(conn, lock, {"roots": int_array(root_ids)})
        else:
            columns = (c.id, c.email, c.phone_number, c.linked_id, c.created_at)
            query = select(*columns).where(_LIVE, c.id.in_(root_ids)).order_by(c.id)
            roots = [tuple(r) for r in conn.execute(query.with_for_update())]
        # Read the rows again now that the roots are locked: an erasure may have split a
        # cluster (promoting a row nobody locked) or cleared a value; a merge moved them.
        rows = _matching(conn, emails, phones)
        still_roots = len(roots) == len(root_ids) and all(r[3] is None for r in roots)
        if still_roots and roots_of(rows) == root_ids:
            if pg:
                raw_execute(conn, "RELEASE SAVEPOINT batch_roots", {})  # locks pass up
            return list(map(HeldRow._make, rows)), [_root_row(r) for r in roots]
        if pg:
            raw_execute(conn, "ROLLBACK TO SAVEPOINT batch_roots", {})
    raise TransientConflict("cluster roots kept moving under concurrent merges")


def _allocate_ids(conn: Connection, count: int) -> list[int]:
    """``count`` fresh contact ids, ascending, each larger than every id already visible."""
    if count == 0:
        return []
    if conn.dialect.name == "postgresql":
        return draw_ids(conn, "contact", count)
    # SQLite: BEGIN IMMEDIATE makes us the only writer, so max(id) cannot move.
    top = conn.execute(select(func.coalesce(func.max(c.id), 0))).scalar_one()
    return list(range(top + 1, top + 1 + count))


def _relink(conn: Connection, relinks: dict[int, int], now: datetime) -> dict[int, list[int]]:
    """Point each demoted root, and every row linked to it, at its final primary.

    Returns each demoted root's contacts (itself included), as they were before.
    """
    if not relinks:
        return {}
    moved: dict[int, list[int]] = {}
    if conn.dialect.name == "postgresql":
        # One statement for the whole batch, two array parameters whatever its size; the
        # demoted roots by primary key, their secondaries by the linked_id index.
        result = conn.execute(
            text(
                "WITH m AS (SELECT * FROM unnest(CAST(:losers AS integer[]),"
                " CAST(:winners AS integer[])) AS m(r, w)),"
                " t AS (SELECT m.r AS id, m.r, m.w FROM m"
                " UNION ALL SELECT x.id, m.r, m.w FROM m JOIN contact AS x"
                " ON x.linked_id = m.r AND x.deleted_at IS NULL)"
                " UPDATE contact AS c SET linked_id = t.w, link_precedence = 'secondary',"
                " updated_at = :now FROM t WHERE c.id = t.id AND c.deleted_at IS NULL"
                " RETURNING c.id, t.r"
            ),
            {
                "losers": int_array(list(relinks)),
                "winners": int_array(list(relinks.values())),
                "now": now,
            },
        )
        for contact_id, root in result:
            moved.setdefault(root, []).append(contact_id)
        return moved
    losers_all = list(relinks)
    for r in conn.execute(
        select(c.id, c.linked_id).where(
            _LIVE, or_(c.id.in_(losers_all), c.linked_id.in_(losers_all))
        )
    ):
        moved.setdefault(r.linked_id if r.linked_id is not None else r.id, []).append(r.id)
    by_winner: dict[int, list[int]] = {}
    for loser, winner in relinks.items():
        by_winner.setdefault(winner, []).append(loser)
    for winner, losers in by_winner.items():
        conn.execute(
            update(contact)
            .where(_LIVE, or_(c.id.in_(losers), c.linked_id.in_(losers)))
            .values(linked_id=winner, link_precedence="secondary", updated_at=now)
        )
    return moved


def apply_events(
    conn: Connection, events: Sequence[Event], policy: GuardPolicy | None = None
) -> BatchResult:
    """Apply ``events`` in one transaction, as if applied one by one in order.

    Takes every identifier lock of the batch at once (sorted, so batches and requests
    never deadlock on them), skips events the ledger already holds, then loads the
    matching rows (which give the guards' partner counts too), leaves out the events
    whose pair is on record already (they write nothing), locks the other events'
    roots in O(1) queries, plans the whole batch in
    memory (``identity.graph.batch.plan_batch``) and writes the difference with one
    multi-row INSERT and one UPDATE. Accepted inbox rows of the batch are deleted in
    the same transaction.

    Guards (``policy``) are checked when applied, under the identifier locks: an ignored
    value is left out (and noted in the ledger), a value erased after the event was
    accepted too; an event left with nothing is recorded as applied with nothing to do.
    """
    policy = policy or GuardPolicy()
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.event_id, event)
    if not first:
        return BatchResult(0, 0, 0, 0)
    keys = {k for e in first.values() for k in identifier_keys(e.identifiers)}
    _lock_identifiers(conn, keys)
    now = utcnow()
    fresh_ids = _record_in_ledger(conn, list(first), now)
    fresh_events = [e for e in first.values() if e.event_id in fresh_ids]
    duplicates = len(events) - len(fresh_events)
    if not fresh_events:
        return BatchResult(0, duplicates, 0, 0)
    # Under the identifier locks, one read of every live row holding a value of the batch
    # (but those a guard ignores whatever the event: a generic value may be held by
    # thousands): it gives the pairs contacts hold and every value's contact partners,
    # and it names the roots to lock. Then the links touching the pairs no contact holds.
    values = _values_of_batch(fresh_events)
    blocked = {v for v in values if policy.is_blocked(v)}  # each value matched once
    marks = load_marks(conn, policy, values, with_erased=True)
    ignored = _ignored_anyway(values, blocked, marks)
    pairs = _pairs_of_batch(fresh_events, ignored)
    emails, phones = _split(values - ignored)
    found = _matching(conn, emails, phones)
    held = {(r[1], r[2]) for r in found}
    open_pairs = pairs - held
    touching = links_touching(conn, {e for e, _ in open_pairs}, {p for _, p in open_pairs})
    linked = touching & pairs
    held |= linked
    if policy.generic_threshold > 0:
        # Link partners only for the values of pairs no contact holds: each partner the
        # batch gives any other value is in that value's contact partners already. Every
        # link touching those values counts, not only those of the batch's own pairs: a
        # value's partner through a link of another pair is a partner all the same.
        counted = {v for e, p in pairs for v in (("e", e), ("p", p))}
        marks.partners = partners_on_record(counted, held | touching)
    # An event whose pair is on record (a contact or a link holds exactly it; or whose one
    # value a contact holds alone) changes nothing, whatever else the batch does (rule 4):
    # it is in the ledger, and its cluster's root is not locked for it (docs/ARCHITECTURE.md,
    # "Event batches and the root locks").
    kept = _screen_batch(conn, fresh_events, policy, marks, blocked, held)
    kept = [(cause, i) for cause, i in kept if (i.email, i.phone) not in held]
    fresh = [identifiers for _, identifiers in kept]
    causes = [event_id for event_id, _ in kept]
    if not fresh:
        return BatchResult(len(fresh_events), duplicates, 0, 0)

    emails = sorted({i.email for i in fresh if i.email is not None})
    phones = sorted({i.phone for i in fresh if i.phone is not None})
    kept_e, kept_p = set(emails), set(phones)
    found = [r for r in found if r[1] in kept_e or r[2] in kept_p]
    rows, roots = _lock_batch_roots(conn, emails, phones, found)
    now = utcnow()  # after the locks: a row that waited is never older than the one it waited for
    plan = plan_batch(fresh, rows, roots, now, linked)
    ids = _allocate_ids(conn, len(plan.new_rows))

    def real(ref: Ref) -> int:
        return ids[ref.index] if isinstance(ref, NewRef) else ref

    if plan.new_rows and conn.dialect.name == "postgresql":
        raw_execute(conn, _PG_INSERT_CONTACTS, _contact_arrays(plan.new_rows, ids, real))
    elif plan.new_rows:
        conn.execute(
            insert(contact),
            [
                {
                    "id": ids[n.index],
                    "email": n.email,
                    "phone_number": n.phone,
                    "linked_id": None if n.is_primary else real(n.root),
                    "link_precedence": "primary" if n.is_primary else "secondary",
                    "created_at": n.created_at,
                    "updated_at": n.created_at,
                }
                for n in plan.new_rows
            ],
        )
    # After the insert: a demoted root may now point at a primary the batch created.
    before = _relink(conn, {loser: real(w) for loser, w in plan.relinks.items()}, now)
    record_links(conn, [(e, p, causes[n]) for n, e, p in plan.links], now)
    feed.record(conn, [_resolve(ch, real, before, causes) for ch in plan.changes], now)
    return BatchResult(len(fresh_events), duplicates, len(plan.new_rows), len(plan.relinks))


# The batch's new contacts: one array a column, whatever the count.
_PG_INSERT_CONTACTS = """
INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at)
SELECT i, e, p, l, k, t, t FROM unnest(%(i)s::integer[], %(e)s::text[], %(p)s::text[],
    %(l)s::integer[], %(k)s::text[], %(t)s::timestamptz[]) AS x(i, e, p, l, k, t)"""


def _contact_arrays(
    new_rows: Sequence[Any], ids: list[int], real: Callable[[Ref], int]
) -> dict[str, str]:
    """One array literal a column (``db.text_array``): psycopg2 would adapt each element,
    a timestamp at several microseconds."""
    return {
        "i": int_array([ids[n.index] for n in new_rows]),
        "e": text_array([n.email for n in new_rows]),
        "p": text_array([n.phone for n in new_rows]),
        "l": int_array([None if n.is_primary else real(n.root) for n in new_rows]),
        "k": text_array(["primary" if n.is_primary else "secondary" for n in new_rows]),
        "t": text_array([n.created_at.isoformat() for n in new_rows]),
    }


def _values_of_batch(events: Sequence[Event]) -> set[Value]:
    return {v for e in events for v in values_of(e.identifiers)}


def _ignored_anyway(values: set[Value], blocked: set[Value], marks: Marks) -> set[Value]:
    """The batch's values every event ignores (an erasure time depends on the event)."""
    return {v for v in values if v in blocked or v in marks.generic or v in marks.suppressed}


def _pairs_of_batch(events: Sequence[Event], ignored: set[Value]) -> set[tuple[str, str]]:
    """The (email, phone) pairs the batch may assert (neither value ignored anyway)."""
    return {
        (i.email, i.phone)
        for i in (e.identifiers for e in events)
        if i.email is not None
        and i.phone is not None
        and ("e", i.email) not in ignored
        and ("p", i.phone) not in ignored
    }


def _split(values: set[Value]) -> tuple[list[str], list[str]]:
    """Emails and phones, each sorted."""
    return sorted(x for k, x in values if k == "e"), sorted(x for k, x in values if k == "p")


def _screen_batch(
    conn: Connection,
    events: Sequence[Event],
    policy: GuardPolicy,
    marks: Marks,
    blocked: set[Value],
    held: set[tuple[str | None, str | None]],
) -> list[tuple[str, Identifiers]]:
    """Each event's identifiers without its ignored values, in order; events left with
    nothing are dropped. Generic marks the batch causes are recorded; ignored values are
    noted on the event's ledger row (field and reason, never the value). ``marks``: the
    batch's values' marks and partners, read under their identifier locks; ``blocked``:
    the batch's values the policy blocks; ``held``: the pairs on record.

    An event whose pair is on record and none of whose values is blocked, suppressed,
    erased or (so far in the batch) generic is dropped without screening: ``screen``
    would keep it whole and mark nothing (its values are each other's partners on
    record already), and the caller drops it for being on record. Three of four events
    of a busy shop are such repeats; screening them was a tenth of a batch's Python.
    """
    kept = []
    notes = []
    marked = blocked | marks.suppressed | marks.erased_at.keys()
    generic = marks.generic  # grows as the batch marks values
    for event in events:
        ids = event.identifiers
        if (ids.email, ids.phone) in held:
            e, p = ("e", ids.email), ("p", ids.phone)
            if e not in marked and p not in marked and e not in generic and p not in generic:
                continue
        screened = screen(ids, policy, marks, accepted_at=event.accepted_at, blocked=blocked)
        if not screened.ignored:  # the common case: the event as it came
            kept.append((event.event_id, ids))
            continue
        record_ignored(conn, screened)
        if screened.newly_generic:
            mark_generic(conn, screened.newly_generic, event.event_id)
        note = ",".join(f"{i.field}:{i.reason}" for i in screened.ignored)
        notes.append({"eid": event.event_id, "note": note})
        if screened.identifiers is not None:
            kept.append((event.event_id, screened.identifiers))
    if notes:
        conn.execute(
            update(ledger)
            .where(ledger.c.event_id == bindparam("eid"))
            .values(ignored=bindparam("note")),
            notes,
        )
    return kept


def _resolve(
    planned: PlannedChange,
    real: Callable[[Ref], int],
    before: dict[int, list[int]],
    causes: Sequence[str],
) -> feed.NewChange:
    """A planned change with real ids: new rows numbered, whole clusters expanded."""
    cause = causes[planned.event]
    primary = real(planned.primary)
    if planned.kind == feed.PERSON_MERGED:
        moved: list[int] = []
        for member in planned.moved:
            if isinstance(member, ClusterOf):
                moved.extend(before.get(member.root, [member.root]))
            else:
                moved.append(real(member))
        return feed.person_merged(primary, [real(a) for a in planned.absorbed], moved, cause)
    assert planned.contact is not None
    contact_id = real(planned.contact)
    if planned.kind == feed.PERSON_CREATED:
        return feed.person_created(contact_id, cause)
    return feed.contact_added(primary, contact_id, cause)


# --- The inbox (durable outbox of POST /events) -------------------------------------


def accept_events(conn: Connection, events: Sequence[Event]) -> None:
    """Write accepted events to the inbox; once committed they are never lost."""
    now = utcnow()
    conn.execute(
        insert(inbox),
        [
            {
                "event_id": e.event_id,
                "email": e.identifiers.email,
                "phone_number": e.identifiers.phone,
                "occurred_at": e.occurred_at,
                "source": e.source,
                "accepted_at": now,
            }
            for e in events
        ],
    )


@dataclass(frozen=True)
class InboxRow:
    seq: int
    event: Event


def _inbox_event(r: Any) -> InboxRow:
    return InboxRow(
        r.seq,
        Event(
            event_id=r.event_id,
            identifiers=Identifiers(email=r.email, phone=r.phone_number),
            occurred_at=r.occurred_at,
            source=r.source,
            accepted_at=r.accepted_at,
        ),
    )


def _claimable(conn: Connection, condition: Any, limit: int) -> Any:
    query = select(inbox).where(condition).order_by(inbox.c.seq).limit(limit)
    if conn.dialect.name == "postgresql":
        # Two relays never publish the same rows at once; neither waits for the other.
        query = query.with_for_update(skip_locked=True)
    return query


def claim_unpublished(conn: Connection, *, limit: int) -> list[InboxRow]:
    """Lock the oldest never-published inbox rows (seq order) for publishing."""
    rows = conn.execute(_claimable(conn, inbox.c.published_at.is_(None), limit)).all()
    return [_inbox_event(r) for r in rows]


def claim_stale(conn: Connection, *, older_than_s: float, limit: int) -> list[InboxRow]:
    """Lock inbox rows published more than ``older_than_s`` ago and still not applied."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    rows = conn.execute(_claimable(conn, inbox.c.published_at < cutoff, limit)).all()
    return [_inbox_event(r) for r in rows]


def mark_published(conn: Connection, seqs: Sequence[int]) -> None:
    if seqs:
        conn.execute(
            update(inbox).where(_one_of(conn, inbox.c.seq, seqs)).values(published_at=utcnow())
        )


def inbox_pending(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(inbox)).scalar_one())


def count_processed_events(conn: Connection) -> int:
    """Events the ledger holds: every distinct event ever applied (metrics)."""
    return int(conn.execute(select(func.count()).select_from(ledger)).scalar_one())


# --- Dead letters ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterRecord:
    event_id: str
    payload: Any
    error: str
    attempts: int
    failed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "payload": self.payload,
            "error": self.error,
            "attempts": self.attempts,
            "failedAt": self.failed_at.isoformat(),
        }


def record_dead_letter(conn: Connection, *, event_id: str, payload: Any, error: str) -> None:
    """Park a failing event with its error (again: attempts + 1); it leaves the inbox."""
    now = utcnow()
    # Keep the payload JSON-clean whatever a producer sent (it is shown and replayed).
    clean = json.loads(json.dumps(payload, default=str))
    stmt = _dialect_insert(conn, dead_letter).values(
        event_id=event_id, payload=clean, error=error[:4000], attempts=1, failed_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[dead_letter.c.event_id],
        set_={
            "payload": stmt.excluded.payload,
            "error": stmt.excluded.error,
            "attempts": dead_letter.c.attempts + 1,
            "failed_at": stmt.excluded.failed_at,
        },
    )
    conn.execute(stmt)
    conn.execute(delete(inbox).where(inbox.c.event_id == event_id))


def list_dead_letters(conn: Connection, *, limit: int = 100) -> list[DeadLetterRecord]:
    rows = conn.execute(
        select(dead_letter).order_by(dead_letter.c.failed_at, dead_letter.c.event_id).limit(limit)
    ).all()
    return [DeadLetterRecord(r.event_id, r.payload, r.error, r.attempts, r.failed_at) for r in rows]


def count_dead_letters(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(dead_letter)).scalar_one())


def take_dead_letters(conn: Connection, event_ids: Sequence[str] | None) -> list[DeadLetterRecord]:
    """Remove and return dead letters (all of them when ``event_ids`` is None), to replay."""
    query = delete(dead_letter)
    if event_ids is not None:
        query = query.where(dead_letter.c.event_id.in_(bindparam("ids", expanding=True)))
    rows = conn.execute(
        query.returning(*dead_letter.c), {"ids": list(event_ids or [])} if event_ids else {}
    ).all()
    return [DeadLetterRecord(r.event_id, r.payload, r.error, r.attempts, r.failed_at) for r in rows]
