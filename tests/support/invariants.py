"""SPEC.md's invariants, checked in SQL and Python, and the union-find model they must equal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

Pair = tuple[str | None, str | None]  # (email, phone), normalized


@dataclass(frozen=True)
class LiveRow:
    id: int
    email: str | None
    phone: str | None
    linked_id: int | None
    precedence: str
    created_at: object


def live_rows(conn: Connection) -> list[LiveRow]:
    rows = conn.execute(
        text(
            "SELECT id, email, phone_number, linked_id, link_precedence, created_at"
            " FROM contact WHERE deleted_at IS NULL ORDER BY id"
        )
    ).all()
    return [LiveRow(*r) for r in rows]


def check_invariants(conn: Connection) -> list[str]:
    """Violations of I1, I2, I3 and I5 in the live rows (empty when all hold)."""
    rows = live_rows(conn)
    by_id = {r.id: r for r in rows}
    problems: list[str] = []

    def root(r: LiveRow) -> int:
        return r.id if r.linked_id is None else r.linked_id

    for r in rows:  # I1
        if r.precedence == "primary" and r.linked_id is not None:
            problems.append(f"I1: primary {r.id} has linkedId {r.linked_id}")
        if r.precedence == "secondary":
            target = by_id.get(r.linked_id) if r.linked_id is not None else None
            if target is None:
                problems.append(f"I1: secondary {r.id} links to missing/dead {r.linked_id}")
            elif target.precedence != "primary" or target.linked_id is not None:
                problems.append(f"I1: secondary {r.id} links to non-primary {r.linked_id} (chain)")
    clusters: dict[int, list[LiveRow]] = defaultdict(list)
    for r in rows:
        clusters[root(r)].append(r)
    for root_id, members in clusters.items():  # I2
        oldest = min(members, key=lambda m: (m.created_at, m.id))
        if oldest.id != root_id:
            problems.append(f"I2: cluster {root_id} has older row {oldest.id}")
    for attr in ("email", "phone"):  # I3
        seen: dict[str, int] = {}
        for r in rows:
            value = getattr(r, attr)
            if value is None:
                continue
            if value in seen and seen[value] != root(r):
                problems.append(f"I3: {attr} {value!r} in clusters {seen[value]} and {root(r)}")
            seen.setdefault(value, root(r))
    pairs: dict[Pair, int] = {}
    for r in rows:  # I5
        key = (r.email, r.phone)
        if key in pairs:
            problems.append(f"I5: rows {pairs[key]} and {r.id} both hold {key}")
        pairs[key] = r.id
    return problems


def model_clusters(pairs: Iterable[Pair]) -> set[frozenset[str]]:
    """Union-find over accepted requests: the connected components of their identifiers."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for email, phone in pairs:
        keys = [k for k in (f"e:{email}" if email else None, f"p:{phone}" if phone else None) if k]
        for k in keys:
            find(k)
        if len(keys) == 2:
            parent[find(keys[0])] = find(keys[1])
    groups: dict[str, set[str]] = defaultdict(set)
    for k in list(parent):
        groups[find(k)].add(k)
    return {frozenset(g) for g in groups.values()}


def db_clusters(conn: Connection) -> set[frozenset[str]]:
    """The database's clusters as sets of namespaced identifiers (comparable to the model)."""
    groups: dict[int, set[str]] = defaultdict(set)
    for r in live_rows(conn):
        root_id = r.id if r.linked_id is None else r.linked_id
        if r.email:
            groups[root_id].add(f"e:{r.email}")
        if r.phone:
            groups[root_id].add(f"p:{r.phone}")
    return {frozenset(g) for g in groups.values()}


def assert_consistent(conn: Connection, accepted: Iterable[Pair]) -> None:
    """I1-I6 hold and the clusters are exactly the model's components (I4, I6)."""
    problems = check_invariants(conn)
    assert not problems, "\n".join(problems[:20])
    model = model_clusters(accepted)
    actual = db_clusters(conn)
    missing = model - actual
    extra = actual - model
    assert not missing and not extra, (
        f"clusters differ from the union-find model: {len(missing)} missing, {len(extra)} extra;"
        f" e.g. missing {sorted(map(sorted, missing))[:3]} extra {sorted(map(sorted, extra))[:3]}"
    )
