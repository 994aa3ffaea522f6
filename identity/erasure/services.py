"""``erase``: a value, or a whole person, disappears; the clusters that held it are recomputed.

Locking follows the writers' discipline (docs/ARCHITECTURE.md, "Erasure and the locks"):
the identifier locks of every erased value (sorted), then the roots of the clusters
holding them ``FOR UPDATE`` in id order inside a savepoint, then the roots of the values
read again; a change sends us round again. So an erasure and an identify or an event
batch touching the same values or clusters run one after the other, never interleaved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from identity import observe
from identity.db import utcnow
from identity.erasure.rules import ClusterErasure, Member, Value, erase_from_cluster
from identity.errors import IdentityError, InvalidInput, TransientConflict
from identity.feed import changes as feed
from identity.guards.hashing import EMAIL, PHONE, resolve_key, value_hash
from identity.locking import advisory_key
from identity.models import Contact, DeadLetter, ErasedValue, EventInbox, GenericValue, Link
from identity.reconcile import ClusterView, Row, build_view

contact: Table = Contact.__table__  # type: ignore[assignment]
link: Table = Link.__table__  # type: ignore[assignment]
inbox: Table = EventInbox.__table__  # type: ignore[assignment]
dead_letter: Table = DeadLetter.__table__  # type: ignore[assignment]
erased_value: Table = ErasedValue.__table__  # type: ignore[assignment]
generic_value: Table = GenericValue.__table__  # type: ignore[assignment]
c = contact.c
_LIVE = c.deleted_at.is_(None)

MAX_ROOT_CHASES = 16
#: A person erased whole takes one identifier lock per value; past this many values the
#: lock table would run short, and the glue value should be erased first (it splits).
MAX_PERSON_VALUES = 2000


class PersonNotFound(IdentityError):
    code = "not_found"


class PersonChanged(IdentityError):
    code = "conflict"


class ErasureRefused(IdentityError):
    code = "unprocessable"


@dataclass(frozen=True)
class ErasureRequest:
    emails: frozenset[str] = frozenset()
    phones: frozenset[str] = frozenset()  # every spelling of the phone
    person_id: int | None = None
    suppress: bool = False
    dry_run: bool = False
    expected_primary_id: int | None = None


@dataclass
class ErasureResult:
    contacts: int = 0
    links: int = 0
    events: int = 0
    persons: list[ClusterView] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "erased": {"contacts": self.contacts, "links": self.links, "events": self.events},
            "persons": [p.to_json()["contact"] for p in self.persons],
            "dryRun": self.dry_run,
        }


class _DryRun(Exception):
    def __init__(self, result: ErasureResult) -> None:
        self.result = result


def _values_condition(values: set[Value]) -> Any:
    emails = sorted(v for k, v in values if k == "e")
    phones = sorted(v for k, v in values if k == "p")
    parts = []
    if emails:
        parts.append(c.email.in_(emails))
    if phones:
        parts.append(c.phone_number.in_(phones))
    return or_(*parts)


def _lock_values(conn: Connection, values: set[Value]) -> None:
    if conn.dialect.name != "postgresql" or not values:
        return
    ids = sorted({advisory_key(("e:" if k == "e" else "p:") + v) for k, v in values})
    conn.execute(
        text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:ids AS bigint[])) AS k"),
        {"ids": ids},
    )


def _roots_of(conn: Connection, values: set[Value]) -> list[int]:
    if not values:
        return []
    query = select(func.coalesce(c.linked_id, c.id)).where(_LIVE, _values_condition(values))
    return sorted(set(conn.execute(query).scalars()))


def _lock_roots(conn: Connection, values: set[Value]) -> list[int]:
    """Lock the roots of the clusters holding ``values``; re-read after the locks."""
    savepoints = conn.dialect.name == "postgresql"
    for _ in range(MAX_ROOT_CHASES):
        roots = _roots_of(conn, values)
        if not roots:
            return []
        savepoint = conn.begin_nested() if savepoints else None
        locked = conn.execute(
            select(c.id, c.linked_id).where(_LIVE, c.id.in_(roots)).order_by(c.id).with_for_update()
        ).all()
        if (
            len(locked) == len(roots)
            and all(r.linked_id is None for r in locked)
            and _roots_of(conn, values) == roots
        ):
            if savepoint is not None:
                savepoint.commit()
            return roots
        if savepoint is not None:
            savepoint.rollback()
    raise TransientConflict("cluster roots kept moving under concurrent writers")


def _members(conn: Connection, root: int) -> list[Member]:
    rows = conn.execute(
        select(c.id, c.email, c.phone_number, c.linked_id, c.created_at).where(
            _LIVE, or_(c.id == root, c.linked_id == root)
        )
    ).all()
    return [Member(r.id, r.email, r.phone_number, r.linked_id, r.created_at) for r in rows]


def _cluster_links(conn: Connection, members: Sequence[Member]) -> list[tuple[str, str]]:
    emails = sorted({m.email for m in members if m.email is not None})
    if not emails:
        return []
    rows = conn.execute(
        select(link.c.email, link.c.phone_number).where(link.c.email.in_(emails))
    ).all()
    return [(r.email, r.phone_number) for r in rows]


def _person_values(members: Iterable[Member]) -> set[Value]:
    values: set[Value] = set()
    for m in members:
        if m.email is not None:
            values.add(("e", m.email))
        if m.phone is not None:
            values.add(("p", m.phone))
    return values


def _target_values(conn: Connection, request: ErasureRequest) -> set[Value]:
    if request.person_id is None:
        return {("e", e) for e in request.emails} | {("p", p) for p in request.phones}
    row = conn.execute(select(c.id, c.linked_id).where(_LIVE, c.id == request.person_id)).first()
    if row is None:
        raise PersonNotFound(f"no live contact has the id {request.person_id}")
    root = row.linked_id if row.linked_id is not None else row.id
    values = _person_values(_members(conn, root))
    if len(values) > MAX_PERSON_VALUES:
        raise ErasureRefused(
            f"the person holds {len(values)} values, more than {MAX_PERSON_VALUES}:"
            " erase the value that glued it first (that splits it), then each part"
        )
    return values


def erase(
    conn: Connection,
    request: ErasureRequest,
    *,
    configured_key: str,
    cause: str | None,
) -> ErasureResult:
    """Erase in the caller's transaction; a dry run answers the same and writes nothing."""
    if request.suppress and not configured_key:
        raise ErasureRefused(
            "suppress needs SUPPRESSION_HASH_KEY: set it (a long random secret, kept"
            " outside the database) to keep suppressed values' hashes"
        )
    values = _target_values(conn, request)
    _lock_values(conn, values)
    roots = _lock_roots(conn, values)
    if request.person_id is not None:
        root = next(iter(roots), None)
        members = _members(conn, root) if root is not None else []
        if root is None or not _person_values(members) <= values:
            # The person gained a value (or moved) before our locks: take them again.
            raise TransientConflict("the person changed while its values were being locked")
        if request.expected_primary_id is not None and root != request.expected_primary_id:
            raise PersonChanged(
                f"the person of contact {request.person_id} is now under primary {root},"
                f" not {request.expected_primary_id}: look again before erasing"
            )
    elif request.expected_primary_id is not None:
        raise InvalidInput(
            "expectedPrimaryContactId goes with personId", field="expectedPrimaryContactId"
        )
    if not request.dry_run:
        return _erase(conn, request, values, roots, configured_key, cause)
    savepoint = conn.begin_nested()
    try:
        result = _erase(conn, request, values, roots, configured_key, cause)
        result.dry_run = True
        raise _DryRun(result)
    except _DryRun as dry:
        savepoint.rollback()
        return dry.result


def _erase(
    conn: Connection,
    request: ErasureRequest,
    values: set[Value],
    roots: Sequence[int],
    configured_key: str,
    cause: str | None,
) -> ErasureResult:
    now = utcnow()
    result = ErasureResult()
    changes: list[feed.NewChange] = []
    for root in roots:
        members = _members(conn, root)
        plan = erase_from_cluster(root, members, _cluster_links(conn, members), values)
        _apply(conn, plan, members, now)
        result.contacts += len(set(plan.cleared) | set(plan.tombstoned))
        result.links += len(plan.links_deleted)
        by_id = {m.id: m for m in plan.remaining}
        for piece in plan.pieces:
            rows = [
                Row(i, by_id[i].email, by_id[i].phone, by_id[i].linked_id, by_id[i].created_at)
                for i in piece.contact_ids
            ]
            result.persons.append(build_view(piece.primary_id, rows))
        changes += _changes(plan, cause)
    result.events = _erase_events(conn, values)
    generic = _drop_generic_marks(conn, values, cause)
    _keep_hashes(conn, values, request.suppress or generic, configured_key, now)
    feed.record(conn, changes, now)
    observe.record(
        conn, observe.ERASED, contacts=result.contacts, links=result.links, events=result.events
    )
    result.persons.sort(key=lambda v: v.primary_id)
    return result


def _apply(
    conn: Connection, plan: ClusterErasure, members: Sequence[Member], now: datetime
) -> None:
    if plan.links_deleted:
        conn.execute(
            delete(link).where(
                tuple_(link.c.email, link.c.phone_number).in_(sorted(plan.links_deleted))
            )
        )
    by_id = {m.id: m for m in plan.remaining}
    before = {m.id: m for m in members}
    tombstones = set(plan.tombstoned)
    updates: list[tuple[int, str | None, str | None, int | None, bool]] = []
    for contact_id in sorted(set(plan.cleared) | tombstones | set(plan.relinked)):
        old = before[contact_id]
        if contact_id in tombstones:
            updates.append((contact_id, None, None, old.linked_id, True))
            continue
        new = by_id[contact_id]
        linked = plan.relinked.get(contact_id, old.linked_id)
        updates.append((contact_id, new.email, new.phone, linked, False))
    if not updates:
        return
    if conn.dialect.name == "postgresql":
        columns = [list(col) for col in zip(*updates, strict=True)]
        conn.execute(
            text(
                "UPDATE contact SET email = u.email, phone_number = u.phone,"
                " linked_id = u.linked,"
                " link_precedence = CASE WHEN u.linked IS NULL THEN 'primary' ELSE 'secondary' END,"
                " deleted_at = CASE WHEN u.dead THEN :now ELSE contact.deleted_at END,"
                " updated_at = :now"
                " FROM unnest(CAST(:ids AS integer[]), CAST(:emails AS text[]),"
                " CAST(:phones AS text[]), CAST(:linked AS integer[]), CAST(:dead AS boolean[]))"
                " AS u(id, email, phone, linked, dead) WHERE contact.id = u.id"
            ),
            dict(zip(("ids", "emails", "phones", "linked", "dead"), columns, strict=True))
            | {"now": now},
        )
        return
    conn.execute(
        update(contact)
        .where(c.id == bindparam("cid"))
        .values(
            email=bindparam("cemail"),
            phone_number=bindparam("cphone"),
            linked_id=bindparam("clinked"),
            link_precedence=bindparam("cprec"),
            deleted_at=bindparam("cdeleted"),
            updated_at=now,
        ),
        [
            {
                "cid": i,
                "cemail": e,
                "cphone": p,
                "clinked": linked,
                "cprec": "primary" if linked is None else "secondary",
                "cdeleted": now if dead else None,
            }
            for i, e, p, linked, dead in updates
        ],
    )


def _changes(plan: ClusterErasure, cause: str | None) -> list[feed.NewChange]:
    if not plan.changes_anything:
        return []
    primaries = [p.primary_id for p in plan.pieces]
    out = [
        feed.NewChange(
            feed.CONTACTS_ERASED,
            {
                "previousPrimaryId": plan.previous_primary_id,
                "primaryContactId": plan.primary_after,
                "clearedContactIds": sorted(
                    i for i in plan.cleared if i not in set(plan.tombstoned)
                ),
                "tombstonedContactIds": sorted(plan.tombstoned),
            },
            cause,
            (plan.previous_primary_id, *primaries, *plan.cleared, *plan.tombstoned),
        )
    ]
    if len(plan.pieces) > 1:
        out.append(
            feed.NewChange(
                feed.PERSON_SPLIT,
                {
                    "previousPrimaryId": plan.previous_primary_id,
                    "persons": [
                        {"primaryContactId": p.primary_id, "contactIds": sorted(p.contact_ids)}
                        for p in plan.pieces
                    ],
                },
                cause,
                (plan.previous_primary_id, *primaries),
            )
        )
    return out


def _phone_pattern(phone: str) -> re.Pattern[str]:
    """A phone's digits with any separators between them, in a raw payload's text."""
    digits = phone.lstrip("+")
    return re.compile(r"(?<!\d)\+?" + r"[\s\-.()]*".join(map(re.escape, digits)) + r"(?!\d)")


def _erase_events(conn: Connection, values: set[Value]) -> int:
    """Queued events and dead letters holding an erased value go; returns how many."""
    if not values:
        return 0
    emails = sorted(v for k, v in values if k == "e")
    phones = sorted(v for k, v in values if k == "p")
    parts = []
    if emails:
        parts.append(inbox.c.email.in_(emails))
    if phones:
        parts.append(inbox.c.phone_number.in_(phones))
    count = conn.execute(delete(inbox).where(or_(*parts))).rowcount or 0
    # Dead letters keep the raw payload as sent: search its text, any case for emails and
    # any separators for phones.
    patterns = [re.compile(re.escape(e), re.IGNORECASE) for e in emails]
    patterns += [_phone_pattern(p) for p in phones]
    doomed = []
    for row in conn.execute(select(dead_letter.c.event_id, dead_letter.c.payload)):
        raw = json.dumps(row.payload, ensure_ascii=False)
        if any(p.search(raw) for p in patterns):
            doomed.append(row.event_id)
    if doomed:
        conn.execute(delete(dead_letter).where(dead_letter.c.event_id.in_(doomed)))
    return int(count) + len(doomed)


def _drop_generic_marks(conn: Connection, values: set[Value], cause: str | None) -> bool:
    """Generic marks hold the value: they go too (the value is suppressed instead), each
    recorded as guard.cleared (its id, never the value)."""
    cleared: list[int] = []
    for kind, value in sorted(values):
        field_name = EMAIL if kind == "e" else PHONE
        cleared += (
            conn.execute(
                delete(generic_value)
                .where(generic_value.c.field == field_name, generic_value.c.value == value)
                .returning(generic_value.c.id)
            )
            .scalars()
            .all()
        )
    feed.record(
        conn,
        [
            feed.NewChange(feed.GUARD_CLEARED, {"guardId": i, "reason": "generic"}, cause)
            for i in cleared
        ],
    )
    return bool(cleared)


def _keep_hashes(
    conn: Connection, values: set[Value], suppress: bool, configured_key: str, now: datetime
) -> None:
    if not values:
        return
    key = resolve_key(conn, configured_key)
    rows = [
        {
            "value_hash": value_hash(key, EMAIL if k == "e" else PHONE, v),
            "kind": EMAIL if k == "e" else PHONE,
            "erased_at": now,
            "suppressed": suppress,
        }
        for k, v in sorted(values)
    ]
    module: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(erased_value).values(rows)
    suppressed = erased_value.c.suppressed | stmt.excluded.suppressed
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[erased_value.c.value_hash],
            set_={"erased_at": stmt.excluded.erased_at, "suppressed": suppressed},
        )
    )
