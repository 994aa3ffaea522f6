"""Guards in the database: read a request's marks under its identifier locks, record marks.

Every read here runs after the caller took the identifier locks of the values it reads
(``locking.lock_keys`` / the batch's locks): every writer that could add a partner to a
value, mark it or suppress it holds the same lock, so the counts cannot overshoot and a
mark cannot be missed (docs/ARCHITECTURE.md, "Guards and the locks").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, select, text, tuple_, union, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from identity.feed import changes as feed
from identity.guards.hashing import EMAIL, PHONE, resolve_key, value_hash
from identity.guards.policy import FIELD, GuardPolicy, Marks, Value
from identity.storage import prepared
from identity.storage.db import text_array, utcnow
from identity.storage.locking import lock_keys
from identity.storage.models import Contact, ErasedValue, GenericValue, Link

contact: Table = Contact.__table__  # type: ignore[assignment]
link: Table = Link.__table__  # type: ignore[assignment]
erased_value: Table = ErasedValue.__table__  # type: ignore[assignment]
generic_value: Table = GenericValue.__table__  # type: ignore[assignment]


def _kind(value: Value) -> str:
    return EMAIL if value[0] == "e" else PHONE


def load_marks(
    conn: Connection,
    policy: GuardPolicy,
    values: Iterable[Value],
    *,
    count_partners: Iterable[Value] = (),
    with_erased: bool = False,
) -> Marks:
    """Generic and suppressed marks of ``values``, the erasure times (events only), and
    the direct partners of ``count_partners`` (at most threshold + 1 each)."""
    wanted = sorted(set(values))
    marks = Marks()
    if not wanted:
        return marks
    if conn.dialect.name == "postgresql":
        _pg_marks(conn, policy, wanted, marks, with_erased)
        if policy.generic_threshold > 0:
            limit = policy.generic_threshold + 1 + max(marks.baseline.values(), default=0)
            marks.partners = partners(conn, sorted(set(count_partners)), limit)
        return marks
    rows = conn.execute(
        select(
            generic_value.c.field,
            generic_value.c.value,
            generic_value.c.cleared_at,
            generic_value.c.baseline,
        ).where(
            tuple_(generic_value.c.field, generic_value.c.value).in_(
                [(_kind(v), v[1]) for v in wanted]
            )
        )
    ).all()
    kinds = {EMAIL: "e", PHONE: "p"}
    for r in rows:
        if r.cleared_at is None:
            marks.generic.add((kinds[r.field], r.value))
        else:
            marks.baseline[(kinds[r.field], r.value)] = r.baseline
    key = resolve_key(conn, policy.configured_key)
    hashes = {value_hash(key, _kind(v), v[1]): v for v in wanted}
    erased = conn.execute(
        select(
            erased_value.c.value_hash, erased_value.c.erased_at, erased_value.c.suppressed
        ).where(erased_value.c.value_hash.in_(sorted(hashes)))
    ).all()
    for h in erased:
        value = hashes[h.value_hash]
        if h.suppressed:
            marks.suppressed.add(value)
        elif with_erased:
            marks.erased_at[value] = h.erased_at
    if policy.generic_threshold > 0:
        extra = max(marks.baseline.values(), default=0)
        marks.partners = partners(
            conn, sorted(set(count_partners)), policy.generic_threshold + 1 + extra
        )
    return marks


_PG_GENERIC = """
SELECT g.field, g.value, g.cleared_at, g.baseline FROM generic_value g
JOIN unnest(%(fields)s::text[], %(values)s::text[]) AS w(field, value)
  ON g.field = w.field AND g.value = w.value"""
_PG_ERASED = """
SELECT value_hash, erased_at, suppressed FROM erased_value
WHERE value_hash = ANY(%(hashes)s::text[])"""


_GENERIC_X = prepared.Prepared(
    "guards_generic", _PG_GENERIC, {"fields": "text[]", "values": "text[]"}
)
_ERASED_X = prepared.Prepared("guards_erased", _PG_ERASED, {"hashes": "text[]"})


def _pg_marks(
    conn: Connection, policy: GuardPolicy, wanted: list[Value], marks: Marks, with_erased: bool
) -> None:
    """``load_marks``' two reads on PostgreSQL: one array parameter per list, plain tuples
    back (a 500-event batch has ~1,000 values: the ``IN`` of tuples compiled per batch
    was most of apply_events' Python time)."""
    kinds = {EMAIL: "e", PHONE: "p"}
    params = {
        "fields": text_array([_kind(v) for v in wanted]),
        "values": text_array([v[1] for v in wanted]),
    }
    for field_name, value, cleared_at, baseline in prepared.run(conn, _GENERIC_X.on(conn), params):
        if cleared_at is None:
            marks.generic.add((kinds[field_name], value))
        else:  # an operator cleared it: it may gain GENERIC_THRESHOLD more partners
            marks.baseline[(kinds[field_name], value)] = baseline
    key = resolve_key(conn, policy.configured_key)
    hashes = {value_hash(key, _kind(v), v[1]): v for v in wanted}
    for value_hash_, erased_at, suppressed in prepared.run(
        conn, _ERASED_X.on(conn), {"hashes": text_array(list(hashes))}
    ):
        value = hashes[value_hash_]
        if suppressed:
            marks.suppressed.add(value)
        elif with_erased:
            marks.erased_at[value] = erased_at


def partners(conn: Connection, values: Sequence[Value], limit: int) -> dict[Value, set[str]]:
    """Each value's direct partners of the other kind in live contacts and links."""
    out: dict[Value, set[str]] = {}
    if not values:
        return out
    if conn.dialect.name == "postgresql":
        for kind, mine, other in (("e", "email", "phone_number"), ("p", "phone_number", "email")):
            batch = [v[1] for v in values if v[0] == kind]
            if not batch:
                continue
            rows = conn.execute(
                text(
                    f"SELECT v.x, ARRAY(SELECT y FROM (SELECT {other} AS y FROM contact"  # noqa: S608
                    f" WHERE deleted_at IS NULL AND {mine} = v.x AND {other} IS NOT NULL"
                    f" UNION SELECT {other} FROM link WHERE {mine} = v.x) z LIMIT :n)"
                    " FROM unnest(CAST(:vals AS text[])) AS v(x)"
                ),
                {"vals": batch, "n": limit},
            ).all()
            for x, found in rows:
                out[(kind, x)] = set(found)
        return out
    for value in values:
        own = contact.c.email if value[0] == "e" else contact.c.phone_number
        partner = contact.c.phone_number if value[0] == "e" else contact.c.email
        link_mine = link.c.email if value[0] == "e" else link.c.phone_number
        link_other = link.c.phone_number if value[0] == "e" else link.c.email
        query = union(
            select(partner.label("y")).where(
                contact.c.deleted_at.is_(None), own == value[1], partner.is_not(None)
            ),
            select(link_other.label("y")).where(link_mine == value[1]),
        ).limit(limit)
        out[value] = set(conn.execute(query).scalars())
    return out


def mark_generic(
    conn: Connection,
    marked: Iterable[tuple[Value, int]],
    cause: str | None,
    now: datetime | None = None,
) -> list[int]:
    """Record values as generic (with the partner count that crossed) and a guard.marked
    change for each, without the value; returns the guard ids."""
    now = now or utcnow()
    ids = []
    changes = []
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    for value, count in marked:
        stmt = module.insert(generic_value).values(
            field=FIELD[value[0]],
            value=value[1],
            partners=count,
            marked_at=now,
            cause=cause,
            baseline=0,
        )
        # A value marked again after an operator cleared it keeps its row (and id).
        guard_id = conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[generic_value.c.field, generic_value.c.value],
                set_={
                    "partners": stmt.excluded.partners,
                    "marked_at": stmt.excluded.marked_at,
                    "cause": stmt.excluded.cause,
                    "cleared_at": None,
                },
            ).returning(generic_value.c.id)
        ).scalar_one()
        ids.append(guard_id)
        changes.append(
            feed.NewChange(feed.GUARD_MARKED, {"guardId": guard_id, "reason": "generic"}, cause)
        )
    feed.record(conn, changes, now)
    return ids


def list_generic(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(generic_value)
        .where(generic_value.c.cleared_at.is_(None))
        .order_by(generic_value.c.id)
    ).all()
    return [
        {
            "id": r.id,
            "field": r.field,
            "value": r.value,
            "partners": r.partners,
            "markedAt": r.marked_at.isoformat(),
        }
        for r in rows
    ]


def count_suppressed(conn: Connection) -> int:
    query = select(erased_value.c.value_hash).where(erased_value.c.suppressed.is_(True))
    return len(conn.execute(query).all())


def clear_generic(conn: Connection, guard_id: int, cause: str | None) -> bool:
    """Unmark a generic value (it may gain GENERIC_THRESHOLD more partners); False when
    no such mark. Recorded as guard.cleared without the value."""
    active = generic_value.c.cleared_at.is_(None)
    row = conn.execute(
        select(generic_value.c.field, generic_value.c.value).where(
            generic_value.c.id == guard_id, active
        )
    ).first()
    if row is None:
        return False
    # Under the value's identifier lock, like every writer counting its partners.
    value: Value = ("e" if row.field == EMAIL else "p", row.value)
    lock_keys(conn, [("e:" if row.field == EMAIL else "p:") + row.value])
    # Kept (without the mark) with the partners it has now: it may gain
    # GENERIC_THRESHOLD more before it is marked again (SPEC).
    now_partners = len(partners(conn, [value], 2**31 - 1).get(value, set()))
    gone = conn.execute(
        update(generic_value)
        .where(generic_value.c.id == guard_id, active)
        .values(cleared_at=utcnow(), baseline=now_partners)
    ).rowcount
    if not gone:
        return False
    feed.record(
        conn,
        [feed.NewChange(feed.GUARD_CLEARED, {"guardId": guard_id, "reason": "generic"}, cause)],
    )
    return True


def prune_erased(conn: Connection, policy: GuardPolicy) -> int:
    """Forget the hashes of erased (not suppressed) values past ERASED_HASH_RETENTION_DAYS."""
    cutoff = utcnow() - policy.erased_retention
    result = conn.execute(
        delete(erased_value).where(
            erased_value.c.suppressed.is_(False), erased_value.c.erased_at < cutoff
        )
    )
    return int(result.rowcount or 0)


class AlreadyGeneric(Exception):
    pass


def mark_by_operator(
    conn: Connection, policy: GuardPolicy, value: Value, cause: str | None
) -> dict[str, Any]:
    """An operator marks ``value`` generic (under its identifier lock); the caller locked."""
    marks = load_marks(conn, policy, [value], count_partners=[value])
    if value in marks.generic:
        raise AlreadyGeneric(FIELD[value[0]])
    count = len(marks.partners.get(value, set()))
    (guard_id,) = mark_generic(conn, [(value, count)], cause)
    return next(g for g in list_generic(conn) if g["id"] == guard_id)
