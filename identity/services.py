"""Use cases. Each takes an open connection (one transaction, owned by the caller)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Table, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from identity import observe, pg_identify
from identity.db import utcnow
from identity.errors import TransientConflict
from identity.feed import changes as feed
from identity.graph.links import linked_pairs, record_links
from identity.guards.policy import AllIgnored, GuardPolicy, record_ignored, screen, values_of
from identity.guards.store import load_marks, mark_generic
from identity.locking import identifier_keys, lock_keys
from identity.models import Contact
from identity.normalize import Identifiers
from identity.reconcile import ClusterView, Insert, Row, build_view, decide

contact: Table = Contact.__table__  # type: ignore[assignment]
c = contact.c
_LIVE = c.deleted_at.is_(None)

# How often the roots of a request may move under us before we give up and let
# the unit of work retry the whole transaction (each move is a concurrent merge).
MAX_ROOT_CHASES = 16


def _row(r: Any) -> Row:
    return Row(
        id=r.id, email=r.email, phone=r.phone_number, linked_id=r.linked_id, created_at=r.created_at
    )


def _matching(identifiers: Identifiers) -> object:
    conditions = []
    if identifiers.email is not None:
        conditions.append(c.email == identifiers.email)
    if identifiers.phone is not None:
        conditions.append(c.phone_number == identifiers.phone)
    return or_(*conditions)


def lock_roots(conn: Connection, identifiers: Identifiers) -> list[Row]:
    """Lock and return the primaries of every cluster holding the request's identifiers.

    Roots are locked ``FOR UPDATE`` in id order, then checked twice: each locked row
    must still be a root (a concurrent merge may have demoted it), and the roots of the
    request's values, read again now that the locks are held, must be exactly the
    locked set (a concurrent erasure may have split a cluster and promoted a row that
    nobody locked). Otherwise we look again; READ COMMITTED takes a fresh snapshot per
    statement.
    """
    roots_of_values = select(func.coalesce(c.linked_id, c.id)).where(
        _LIVE,
        _matching(identifiers),  # type: ignore[arg-type]
    )
    root_ids = roots_of_values.scalar_subquery()
    for _ in range(MAX_ROOT_CHASES):
        rows = conn.execute(
            select(c.id, c.email, c.phone_number, c.linked_id, c.created_at)
            .where(_LIVE, c.id.in_(root_ids))
            .order_by(c.id)
            .with_for_update()
        ).all()
        if not all(r.linked_id is None for r in rows):
            continue
        now_roots = set(conn.execute(roots_of_values).scalars())
        if now_roots == {r.id for r in rows}:
            return [_row(r) for r in rows]
    raise TransientConflict("cluster roots kept moving under concurrent merges")


def load_members(conn: Connection, root_ids: Sequence[int]) -> list[Row]:
    """Every live row of the given clusters, in one query."""
    if not root_ids:
        return []
    rows = conn.execute(
        select(c.id, c.email, c.phone_number, c.linked_id, c.created_at).where(
            _LIVE, or_(c.id.in_(root_ids), c.linked_id.in_(root_ids))
        )
    ).all()
    return [_row(r) for r in rows]


def peek(
    conn: Connection, *, identifiers: Identifiers, policy: GuardPolicy | None = None
) -> ClusterView | None:
    """The answer of a request that changes nothing (rule 4), read without any lock.

    On PostgreSQL one statement, fit for ``db.run_read_only``; ``None`` when the request
    may write (or on SQLite): then run :func:`identify` in a transaction.
    """
    if conn.dialect.name != "postgresql":
        return None
    return pg_identify.peek(conn, identifiers, policy)


def identify(
    conn: Connection,
    *,
    identifiers: Identifiers,
    peeked: bool = False,
    cause: str | None = None,
    policy: GuardPolicy | None = None,
) -> ClusterView | AllIgnored:
    """Reconcile one email/phone pair (SPEC.md rules 1-4) and answer with its cluster.

    ``peeked``: :func:`peek` already returned None for this request. ``cause``: the
    request id, recorded on the links and changes this request writes. ``policy``: the
    guards (blocked patterns, generic threshold); the request's ignored values are left
    out and reported in the answer, and when nothing is left the outcome is
    :class:`AllIgnored` (nothing written but the generic marks it caused).
    """
    policy = policy or GuardPolicy()
    if conn.dialect.name == "postgresql":
        # The same steps in fewer round trips, the answer aggregated in SQL.
        return pg_identify.identify(
            conn, identifiers=identifiers, peeked=peeked, cause=cause, policy=policy
        )
    lock_keys(conn, identifier_keys(identifiers))
    values = values_of(identifiers)
    marks = load_marks(conn, policy, values, count_partners=values if len(values) == 2 else ())
    screened = screen(identifiers, policy, marks)
    record_ignored(conn, screened)
    if screened.newly_generic:
        mark_generic(conn, screened.newly_generic, cause)
    if screened.identifiers is None:
        return AllIgnored(screened)
    view = apply_identifiers(conn, identifiers=screened.identifiers, cause=cause)
    return replace(view, ignored=screened.ignored) if screened.ignored else view


def _pair_linked(conn: Connection, identifiers: Identifiers) -> bool:
    if identifiers.email is None or identifiers.phone is None:
        return False
    return bool(linked_pairs(conn, [(identifiers.email, identifiers.phone)]))


def apply_identifiers(
    conn: Connection, *, identifiers: Identifiers, cause: str | None = None
) -> ClusterView:
    """Rules 1-4 for a request whose identifier locks the caller already holds."""
    roots = lock_roots(conn, identifiers)
    members = load_members(conn, [r.id for r in roots])
    decision = decide(identifiers, roots, members, pair_linked=_pair_linked(conn, identifiers))
    now = utcnow()
    changes: list[feed.NewChange] = []

    if decision.demote:
        # Rule 3: the newer clusters, primaries and secondaries alike, point at the
        # winner directly (one level, never a chain), in one statement.
        assert decision.primary_id is not None
        moved = [m.id for m in members if (m.linked_id or m.id) in decision.demote]
        conn.execute(
            update(contact)
            .where(_LIVE, or_(c.id.in_(decision.demote), c.linked_id.in_(decision.demote)))
            .values(linked_id=decision.primary_id, link_precedence="secondary", updated_at=now)
        )
        observe.record(conn, observe.MERGE, demoted=len(decision.demote))
        changes.append(feed.person_merged(decision.primary_id, decision.demote, moved, cause))
    if decision.link:
        assert identifiers.email is not None and identifiers.phone is not None
        record_links(conn, [(identifiers.email, identifiers.phone, cause)], now)

    if decision.insert is Insert.NOTHING:
        assert decision.primary_id is not None
        feed.record(conn, changes, now)
        return build_view(decision.primary_id, members)

    if decision.insert is Insert.SECONDARY:
        winner = next(r for r in roots if r.id == decision.primary_id)
        # Never older than its primary, whatever the clocks of the app servers say (I2).
        created_at = max(now, winner.created_at)
        linked_id: int | None = winner.id
    else:
        created_at, linked_id = now, None
    new_id = conn.execute(
        insert(contact)
        .values(
            email=identifiers.email,
            phone_number=identifiers.phone,
            linked_id=linked_id,
            link_precedence="secondary" if linked_id else "primary",
            created_at=created_at,
            updated_at=created_at,
        )
        .returning(c.id)
    ).scalar_one()
    if linked_id is None:
        changes.append(feed.person_created(new_id, cause))
    else:
        changes.append(feed.contact_added(linked_id, new_id, cause))
    feed.record(conn, changes, now)
    new_row = Row(
        id=new_id,
        email=identifiers.email,
        phone=identifiers.phone,
        linked_id=linked_id,
        created_at=created_at,
    )
    return build_view(linked_id or new_id, [*members, new_row])
