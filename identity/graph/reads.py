"""Reading the graph without writing: lookup, a person, its graph, why-paths, history.

Every function takes an open connection and only reads (tests prove no row changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, or_, select
from sqlalchemy.engine import Connection

from identity import pg_identify
from identity.feed import changes as feed
from identity.graph.paths import Contact, Edge, Link, chain, explore
from identity.models import Contact as ContactModel
from identity.models import Link as LinkModel
from identity.normalize import Identifiers
from identity.reconcile import ClusterView, Row, build_view

contact: Table = ContactModel.__table__  # type: ignore[assignment]
link: Table = LinkModel.__table__  # type: ignore[assignment]
c = contact.c
_LIVE = c.deleted_at.is_(None)

#: A cluster larger than this is not loaded whole for why-paths (answer 422).
MAX_CLUSTER_SCAN = 50_000


def root_of(conn: Connection, contact_id: int) -> int | None:
    """The primary of the live contact ``contact_id``; None when there is none."""
    row = conn.execute(select(c.id, c.linked_id).where(_LIVE, c.id == contact_id)).first()
    if row is None:
        return None
    return int(row.linked_id if row.linked_id is not None else row.id)


def cluster_view(conn: Connection, root_id: int) -> ClusterView:
    """The /identify answer for the cluster under ``root_id`` (aggregated in SQL on PG)."""
    if conn.dialect.name == "postgresql":
        return pg_identify.cluster_view(conn, root_id)
    rows = conn.execute(
        select(c.id, c.email, c.phone_number, c.linked_id, c.created_at).where(
            _LIVE, or_(c.id == root_id, c.linked_id == root_id)
        )
    ).all()
    members = [Row(r.id, r.email, r.phone_number, r.linked_id, r.created_at) for r in rows]
    return build_view(root_id, members)


def lookup(conn: Connection, identifiers: Identifiers) -> list[ClusterView]:
    """Every cluster holding the email or the phone, ascending by primary id."""
    conditions = []
    if identifiers.email is not None:
        conditions.append(c.email == identifiers.email)
    if identifiers.phone is not None:
        conditions.append(c.phone_number == identifiers.phone)
    roots = conn.execute(
        select(func.coalesce(c.linked_id, c.id)).where(_LIVE, or_(*conditions)).distinct()
    ).scalars()
    return [cluster_view(conn, root) for root in sorted(roots)]


def person(conn: Connection, contact_id: int) -> ClusterView | None:
    root = root_of(conn, contact_id)
    return None if root is None else cluster_view(conn, root)


def _cluster(conn: Connection, root_id: int, limit: int) -> tuple[list[Contact], list[Link], int]:
    """Up to ``limit`` contacts of the cluster (creation order), its links, and its size."""
    members = or_(c.id == root_id, c.linked_id == root_id)
    size = conn.execute(select(func.count()).where(_LIVE, members)).scalar_one()
    rows = conn.execute(
        select(c.id, c.email, c.phone_number, c.linked_id, c.created_at)
        .where(_LIVE, members)
        .order_by(c.created_at, c.id)
        .limit(limit)
    ).all()
    contacts = [Contact(r.id, r.email, r.phone_number, r.linked_id, r.created_at) for r in rows]
    emails = select(c.email).where(_LIVE, members, c.email.is_not(None)).scalar_subquery()
    links = conn.execute(
        select(link.c.email, link.c.phone_number, link.c.created_at, link.c.cause)
        .where(link.c.email.in_(emails))
        .order_by(link.c.created_at, link.c.id)
    ).all()
    return contacts, [Link(r.email, r.phone_number, r.created_at, r.cause) for r in links], size


@dataclass(frozen=True)
class PersonGraph:
    primary_id: int
    contacts: list[Contact]
    links: list[Link]
    edges: list[Edge]
    total: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        shown = {x.id for x in self.contacts}
        return {
            "primaryContactId": self.primary_id,
            "contacts": [x.to_json() for x in self.contacts],
            "links": [x.to_json() for x in self.links],
            "edges": [e.to_json() for e in self.edges],
            "truncated": len(shown) < self.total,
            "totalContacts": self.total,
            "limit": self.limit,
        }


def person_graph(conn: Connection, contact_id: int, *, limit: int) -> PersonGraph | None:
    """The cluster's contacts nearest the primary by edges (at most ``limit``), the links
    among them, and a spanning tree of edges joining them."""
    root = root_of(conn, contact_id)
    if root is None:
        return None
    contacts, links, total = _cluster(conn, root, MAX_CLUSTER_SCAN)
    order, via = explore(contacts, links, root, limit=limit)
    by_id = {x.id: x for x in contacts}
    kept = sorted((by_id[i] for i in order), key=lambda x: (x.created_at, x.id))
    values = {x.email for x in kept} | {x.phone for x in kept}
    shown_links = [k for k in links if k.email in values and k.phone in values]
    edges = [via[i] for i in order[1:]]
    return PersonGraph(root, kept, shown_links, edges, total, limit)


@dataclass(frozen=True)
class WhyPath:
    primary_id: int
    contact_ids: list[int]
    edges: list[Edge]

    def to_json(self) -> dict[str, Any]:
        return {
            "primaryContactId": self.primary_id,
            "contactIds": self.contact_ids,
            "edges": [e.to_json() for e in self.edges],
        }


class ClusterTooLarge(Exception):
    pass


def why(conn: Connection, contact_id: int, a: int, b: int) -> WhyPath | None:
    """The shortest chain of edges from contact ``a`` to contact ``b``, both in the cluster
    of ``contact_id``; None when they are not (or a contact is not live)."""
    root = root_of(conn, contact_id)
    if root is None or root_of(conn, a) != root or root_of(conn, b) != root:
        return None
    contacts, links, total = _cluster(conn, root, MAX_CLUSTER_SCAN)
    if total > MAX_CLUSTER_SCAN:
        raise ClusterTooLarge(f"the person has {total} contacts, more than {MAX_CLUSTER_SCAN}")
    _, via = explore(contacts, links, a, stop_at=b)
    edges = chain(via, a, b)
    if edges is None:  # cannot happen while I4 holds; never answer a wrong chain
        return None
    return WhyPath(root, [a, *(e.b for e in edges)], edges)


def history(
    conn: Connection, contact_id: int, *, limit: int
) -> tuple[int, Sequence[feed.ChangeRecord]] | None:
    """The changes that built the person of ``contact_id``, absorbed clusters' included."""
    root = root_of(conn, contact_id)
    if root is None:
        return None
    members = select(c.id).where(_LIVE, or_(c.id == root, c.linked_id == root))
    return root, feed.history(conn, members, limit=limit + 1)  # one more: "truncated"
