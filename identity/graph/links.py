"""Links: an (email, phone) assertion recorded without a contact (SPEC "The graph's edges")."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from identity.models import Link

link: Table = Link.__table__  # type: ignore[assignment]

Pair = tuple[str, str]


def record_links(
    conn: Connection, pairs: Iterable[tuple[str, str, str | None]], at: datetime
) -> None:
    """Insert links ``(email, phone, cause)``; a pair already on record is left as it is."""
    rows = [{"email": e, "phone_number": p, "created_at": at, "cause": c} for e, p, c in pairs]
    if not rows:
        return
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(module.insert(link).on_conflict_do_nothing(), rows)


def linked_pairs(conn: Connection, pairs: Iterable[Pair]) -> set[Pair]:
    """Which of ``pairs`` a link holds."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    condition = tuple_(link.c.email, link.c.phone_number).in_(wanted)
    rows = conn.execute(select(link.c.email, link.c.phone_number).where(condition)).all()
    return {(r.email, r.phone_number) for r in rows}
