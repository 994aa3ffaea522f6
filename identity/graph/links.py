"""Links: an (email, phone) assertion recorded without a contact (SPEC "The graph's edges")."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Table, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from identity.storage.db import raw_execute, text_array
from identity.storage.models import Link

link: Table = Link.__table__  # type: ignore[assignment]

Pair = tuple[str, str]


def record_links(
    conn: Connection, pairs: Iterable[tuple[str, str, str | None]], at: datetime
) -> None:
    """Insert links ``(email, phone, cause)``; a pair already on record is left as it is."""
    pairs = list(pairs)
    if not pairs:
        return
    if conn.dialect.name == "postgresql":
        # One array a column, whatever the count (an event batch records hundreds).
        raw_execute(
            conn,
            "INSERT INTO link (email, phone_number, created_at, cause)"
            " SELECT e, p, %(at)s, c FROM unnest(%(e)s::text[], %(p)s::text[], %(c)s::text[])"
            " AS x(e, p, c) ON CONFLICT DO NOTHING",
            {
                "e": text_array([e for e, _, _ in pairs]),
                "p": text_array([p for _, p, _ in pairs]),
                "c": text_array([c for _, _, c in pairs]),
                "at": at,
            },
        )
        return
    rows = [{"email": e, "phone_number": p, "created_at": at, "cause": c} for e, p, c in pairs]
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(module.insert(link).on_conflict_do_nothing(), rows)


def linked_pairs(conn: Connection, pairs: Iterable[Pair]) -> set[Pair]:
    """Which of ``pairs`` a link holds."""
    wanted = sorted(set(pairs))
    if not wanted:
        return set()
    if conn.dialect.name == "postgresql":
        found = raw_execute(
            conn,
            "SELECT l.email, l.phone_number FROM link l"
            " JOIN unnest(%(e)s::text[], %(p)s::text[]) AS w(e, p)"
            " ON l.email = w.e AND l.phone_number = w.p",
            {"e": [e for e, _ in wanted], "p": [p for _, p in wanted]},
        )
        return {(e, p) for e, p in found}
    condition = tuple_(link.c.email, link.c.phone_number).in_(wanted)
    rows = conn.execute(select(link.c.email, link.c.phone_number).where(condition)).all()
    return {(r.email, r.phone_number) for r in rows}


def links_touching(conn: Connection, emails: Iterable[str], phones: Iterable[str]) -> set[Pair]:
    """Every link holding one of ``emails`` or one of ``phones``: the links of a batch's
    pairs (those it holds exactly) and its values' link partners, in one read."""
    emails, phones = sorted(set(emails)), sorted(set(phones))
    if not emails and not phones:
        return set()
    if conn.dialect.name == "postgresql":
        found = raw_execute(
            conn,
            "SELECT email, phone_number FROM link WHERE email = ANY(%(e)s::text[])"
            " UNION SELECT email, phone_number FROM link WHERE phone_number = ANY(%(p)s::text[])",
            {"e": text_array(emails), "p": text_array(phones)},
        )
        return {(e, p) for e, p in found}
    condition = or_(link.c.email.in_(emails), link.c.phone_number.in_(phones))
    rows = conn.execute(select(link.c.email, link.c.phone_number).where(condition)).all()
    return {(r.email, r.phone_number) for r in rows}
