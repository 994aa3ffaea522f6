"""How a person holds together, as pure functions over its contacts and links.

A cluster is a graph: contacts are nodes; two contacts are joined when they share an
email or a phone, or when a link holds an email of one and a phone of the other (SPEC
I4). ``explore`` walks it breadth first from one contact, so the first contacts it
reaches are the nearest by edges; each reached contact remembers the edge it was reached
by, which gives both a spanning tree (``GET /persons/{id}/graph``) and a shortest chain
(``GET /persons/{id}/why``).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Contact:
    id: int
    email: str | None
    phone: str | None
    linked_id: int | None
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "phoneNumber": self.phone,
            "linkPrecedence": "primary" if self.linked_id is None else "secondary",
            "linkedId": self.linked_id,
            "createdAt": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Link:
    email: str
    phone: str
    created_at: datetime
    cause: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "phoneNumber": self.phone,
            "createdAt": self.created_at.isoformat(),
            "cause": self.cause,
        }


@dataclass(frozen=True)
class Edge:
    """Contacts ``a`` and ``b`` are one person because of ``via``: a shared ``email`` or
    ``phoneNumber`` (``value``), or a ``link`` (``link``)."""

    a: int
    b: int
    via: str
    value: str | None = None
    link: Link | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "via": self.via}
        if self.link is not None:
            out["link"] = self.link.to_json()
        else:
            out["value"] = self.value
        return out


def explore(
    contacts: Sequence[Contact],
    links: Iterable[Link],
    start: int,
    *,
    stop_at: int | None = None,
    limit: int | None = None,
) -> tuple[list[int], dict[int, Edge]]:
    """Breadth-first from ``start``: contact ids in the order reached, and for each but
    ``start`` the edge it was reached by. Stops once ``stop_at`` is reached or ``limit``
    contacts are. Each value is expanded once, so the walk is linear in the cluster."""
    by_email: dict[str, list[Contact]] = defaultdict(list)
    by_phone: dict[str, list[Contact]] = defaultdict(list)
    for c in contacts:
        if c.email is not None:
            by_email[c.email].append(c)
        if c.phone is not None:
            by_phone[c.phone].append(c)
    links_by_email: dict[str, list[Link]] = defaultdict(list)
    links_by_phone: dict[str, list[Link]] = defaultdict(list)
    for link in links:
        links_by_email[link.email].append(link)
        links_by_phone[link.phone].append(link)
    by_id = {c.id: c for c in contacts}

    order = [start]
    via: dict[int, Edge] = {}
    seen = {start}
    expanded: set[tuple[str, str]] = set()
    queue = deque([by_id[start]])

    def reach(target: Contact, edge: Edge) -> bool:
        if target.id in seen:
            return False
        seen.add(target.id)
        via[target.id] = edge
        order.append(target.id)
        queue.append(target)
        return target.id == stop_at or (limit is not None and len(order) >= limit)

    if start == stop_at or (limit is not None and limit <= 1):
        return order, via
    while queue:
        u = queue.popleft()
        steps: list[tuple[Contact, Edge]] = []
        if u.email is not None and ("e", u.email) not in expanded:
            expanded.add(("e", u.email))
            steps += [(v, Edge(u.id, v.id, "email", u.email)) for v in by_email[u.email]]
        if u.phone is not None and ("p", u.phone) not in expanded:
            expanded.add(("p", u.phone))
            steps += [(v, Edge(u.id, v.id, "phoneNumber", u.phone)) for v in by_phone[u.phone]]
        if u.email is not None and ("le", u.email) not in expanded:
            expanded.add(("le", u.email))
            for link in links_by_email[u.email]:
                steps += [(v, Edge(u.id, v.id, "link", link=link)) for v in by_phone[link.phone]]
        if u.phone is not None and ("lp", u.phone) not in expanded:
            expanded.add(("lp", u.phone))
            for link in links_by_phone[u.phone]:
                steps += [(v, Edge(u.id, v.id, "link", link=link)) for v in by_email[link.email]]
        for target, edge in steps:
            if reach(target, edge):
                return order, via
    return order, via


def chain(via: dict[int, Edge], start: int, end: int) -> list[Edge] | None:
    """The edges from ``start`` to ``end`` in walk order, or None when ``end`` was not reached."""
    if end == start:
        return []
    if end not in via:
        return None
    edges = []
    node = end
    while node != start:
        edge = via[node]
        edges.append(edge)
        node = edge.a
    return edges[::-1]


def components(contacts: Sequence[Contact], links: Iterable[Link]) -> list[list[Contact]]:
    """The connected components, each in (created_at, id) order, ordered by oldest contact."""
    remaining = {c.id for c in contacts}
    link_list = list(links)
    by_id = {c.id: c for c in contacts}
    out = []
    for c in sorted(contacts, key=lambda c: (c.created_at, c.id)):
        if c.id not in remaining:
            continue
        reached, _ = explore(contacts, link_list, c.id)
        remaining.difference_update(reached)
        out.append(sorted((by_id[i] for i in reached), key=lambda c: (c.created_at, c.id)))
    return out
