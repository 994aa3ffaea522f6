"""What an erasure does to one cluster, as a pure function over its contacts and links.

The erased values are cleared from every contact; a contact left with no value, or with
exactly the values of an older live contact (I5), becomes a tombstone; links holding an
erased value go. The remaining contacts and links are then split into their connected
components (I4); each becomes a cluster under its oldest contact (I2), every other
contact linked to it directly (I1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from identity.graph.reconcile import Row

Value = tuple[str, str]  # ("e", email) or ("p", phone)


#: A live contact as the rules see it (the same shape as the identify rules' rows).
Member = Row


@dataclass(frozen=True)
class Piece:
    """A cluster after the erasure: its primary and every contact (primary first)."""

    primary_id: int
    contact_ids: tuple[int, ...]


@dataclass
class ClusterErasure:
    previous_primary_id: int
    cleared: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # id -> (email, phone)
    tombstoned: list[int] = field(default_factory=list)
    links_deleted: list[tuple[str, str]] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    #: contact id -> (linked_id, precedence) for every live contact whose link changes
    relinked: dict[int, int | None] = field(default_factory=dict)
    remaining: list[Member] = field(default_factory=list)  # live contacts, values cleared

    @property
    def primary_after(self) -> int | None:
        """The previous primary when it survives, else the oldest remaining contact."""
        for piece in self.pieces:
            if piece.primary_id == self.previous_primary_id:
                return piece.primary_id
        return self.pieces[0].primary_id if self.pieces else None

    @property
    def changes_anything(self) -> bool:
        return bool(self.cleared or self.tombstoned or self.links_deleted or self.relinked)


def erase_from_cluster(
    previous_primary_id: int,
    members: Sequence[Member],
    links: Iterable[tuple[str, str]],
    erased: set[Value],
) -> ClusterErasure:
    out = ClusterErasure(previous_primary_id)
    left: list[Member] = []
    for m in sorted(members, key=lambda m: m.age):
        clear_email = m.email is not None and ("e", m.email) in erased
        clear_phone = m.phone is not None and ("p", m.phone) in erased
        email = None if clear_email else m.email
        phone = None if clear_phone else m.phone
        if clear_email or clear_phone:
            out.cleared[m.id] = (clear_email, clear_phone)
        left.append(Member(m.id, email, phone, m.linked_id, m.created_at))
    seen_pairs: set[tuple[str | None, str | None]] = set()
    for m in left:  # oldest first: the older of two equal contacts stays (I5)
        if (m.email is None and m.phone is None) or (m.email, m.phone) in seen_pairs:
            out.tombstoned.append(m.id)
        else:
            seen_pairs.add((m.email, m.phone))
            out.remaining.append(m)
    kept_links = []
    for email, phone in links:
        if ("e", email) in erased or ("p", phone) in erased:
            out.links_deleted.append((email, phone))
        else:
            kept_links.append((email, phone))
    for piece in components(out.remaining, kept_links):
        primary = piece[0]
        out.pieces.append(Piece(primary.id, tuple(m.id for m in piece)))
        for m in piece:
            wanted = None if m.id == primary.id else primary.id
            if m.linked_id != wanted:
                out.relinked[m.id] = wanted
    return out


def components(members: Sequence[Member], links: Iterable[tuple[str, str]]) -> list[list[Member]]:
    """Connected components by shared values and links, each oldest first, ordered by their
    oldest contact. Union-find over values: linear in contacts plus links."""
    parent: dict[Value, Value] = {}

    def find(x: Value) -> Value:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: Value, b: Value) -> None:
        parent[find(a)] = find(b)

    anchors: dict[int, Value] = {}
    for m in members:
        values = [v for v in (("e", m.email), ("p", m.phone)) if v[1] is not None]
        anchors[m.id] = values[0]  # type: ignore[assignment]
        for v in values:
            find(v)  # type: ignore[arg-type]
        if len(values) == 2:
            union(values[0], values[1])  # type: ignore[arg-type]
    for email, phone in links:
        if ("e", email) in parent and ("p", phone) in parent:
            union(("e", email), ("p", phone))
    groups: dict[Value, list[Member]] = {}
    for m in sorted(members, key=lambda m: m.age):
        groups.setdefault(find(anchors[m.id]), []).append(m)
    return sorted(groups.values(), key=lambda g: g[0].age)
