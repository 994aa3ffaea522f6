"""Reading the contact table directly, to prove what a request wrote (or did not)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine


def count_contacts(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM contact")).scalar_one())


def snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    """Every column of every row (deleted ones too), in id order."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT id, email, phone_number, linked_id, link_precedence,"
                    " created_at, updated_at, deleted_at FROM contact ORDER BY id"
                )
            )
        ]


def links(engine: Engine) -> dict[int, tuple[int | None, str]]:
    """id -> (linkedId, linkPrecedence) of every live row."""
    with engine.connect() as conn:
        return {
            r.id: (r.linked_id, r.link_precedence)
            for r in conn.execute(
                text(
                    "SELECT id, linked_id, link_precedence FROM contact"
                    " WHERE deleted_at IS NULL ORDER BY id"
                )
            )
        }
