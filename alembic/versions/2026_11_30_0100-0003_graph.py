"""graph: links, the change feed, and the backfill that keeps every stored cluster one cluster

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 01:00:00

The backfill follows SPEC.md ("The graph's edges"): each stored cluster is split into
its pieces (contacts joined by shared values alone); in creation order of their oldest
contacts, each later piece is joined to the piece holding the primary by a link of that
piece's oldest email and the later piece's oldest phone, or else the later piece's
oldest email and that piece's oldest phone; cause "backfill". When neither pair exists
the migration stops and names the cluster. The algorithm is kept here, frozen with the
migration, rather than imported from the domain (which will change).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNSEQUENCED = sa.text("seq IS NULL")


class BackfillError(RuntimeError):
    pass


def _pieces(members: Sequence[Any]) -> list[list[Any]]:
    """Contacts joined by shared values alone, each piece in (created_at, id) order,
    the pieces in the order of their oldest contacts."""
    parent = list(range(len(members)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_by_value: dict[tuple[str, str], int] = {}
    for i, m in enumerate(members):
        for key in (("e", m.email), ("p", m.phone_number)):
            if key[1] is None:
                continue
            j = first_by_value.setdefault(key, i)
            parent[find(i)] = find(j)
    groups: dict[int, list[Any]] = {}
    for i, m in enumerate(members):
        groups.setdefault(find(i), []).append(m)
    pieces = [sorted(g, key=lambda m: (m.created_at, m.id)) for g in groups.values()]
    return sorted(pieces, key=lambda p: (p[0].created_at, p[0].id))


def _oldest(piece: Sequence[Any], attr: str) -> str | None:
    return next((getattr(m, attr) for m in piece if getattr(m, attr) is not None), None)


def backfill_pairs(root_id: int, members: Sequence[Any]) -> list[tuple[str, str]]:
    """The links that keep one stored cluster one cluster (SPEC.md's backfill rule)."""
    pieces = _pieces(members)
    head = next(p for p in pieces if any(m.id == root_id for m in p))
    pairs = []
    for piece in pieces:
        if piece is head:
            continue
        first = (_oldest(head, "email"), _oldest(piece, "phone_number"))
        second = (_oldest(piece, "email"), _oldest(head, "phone_number"))
        if first[0] is not None and first[1] is not None:
            pairs.append((first[0], first[1]))
        elif second[0] is not None and second[1] is not None:
            pairs.append((second[0], second[1]))
        else:
            raise BackfillError(
                f"cluster {root_id}: piece starting at contact {piece[0].id} can be joined to"
                " the primary's piece by no (email, phone) pair; fix the cluster by hand"
                " (docs/OPERATIONS.md, 'Upgrading to links') and run the migration again"
            )
    return pairs


def _clusters(bind: Any) -> Iterator[tuple[int, list[Any]]]:
    """Every stored cluster with more than one contact, streamed in root order."""
    rows = bind.execute(
        sa.text(
            "SELECT coalesce(linked_id, id) AS root, id, email, phone_number, created_at"
            " FROM contact WHERE deleted_at IS NULL AND coalesce(linked_id, id) IN ("
            "   SELECT linked_id FROM contact WHERE deleted_at IS NULL AND linked_id IS NOT NULL)"
            " ORDER BY root, created_at, id"
        )
    )
    current: int | None = None
    members: list[Any] = []
    for row in rows:
        if row.root != current:
            if members:
                yield current, members  # type: ignore[misc]
            current, members = row.root, []
        members.append(row)
    if members:
        yield current, members  # type: ignore[misc]


def upgrade() -> None:
    bind = op.get_bind()
    # Check every cluster before any DDL. SQLite (pysqlite) runs CREATE TABLE outside the
    # migration's transaction, so a BackfillError raised after it would leave the new
    # tables behind, and running the migration again after the fix by hand would fail
    # with "table link already exists".
    for root_id, members in _clusters(bind):
        backfill_pairs(root_id, members)

    op.create_table(
        "link",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link")),
    )
    op.create_index("ix_link_email_phone_number", "link", ["email", "phone_number"], unique=True)
    op.create_index("ix_link_phone_number", "link", ["phone_number"], unique=False)
    op.create_table(
        "change",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("seq", BigId, nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change")),
    )
    op.create_index("ix_change_seq", "change", ["seq"], unique=True)
    op.create_index(
        "ix_change_unsequenced",
        "change",
        ["id"],
        unique=False,
        postgresql_where=UNSEQUENCED,
        sqlite_where=UNSEQUENCED,
    )
    op.create_table(
        "change_subject",
        sa.Column("change_id", BigId, nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["change_id"],
            ["change.id"],
            name=op.f("fk_change_subject_change_id_change"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("change_id", "contact_id", name=op.f("pk_change_subject")),
    )
    op.create_index(
        "ix_change_subject_contact_id", "change_subject", ["contact_id"], unique=False
    )
    op.create_table(
        "feed_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", BigId, nullable=False),
        sa.Column("pruned_through", BigId, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_state")),
    )

    link = sa.table(
        "link",
        sa.column("email"),
        sa.column("phone_number"),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("cause"),
    )
    now = datetime.now(UTC)
    if bind.dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # the service's UTCDateTime stores SQLite naive UTC
    batch: set[tuple[str, str]] = set()
    for root_id, members in _clusters(bind):
        batch.update(backfill_pairs(root_id, members))
        if len(batch) >= 5000:
            _insert_links(bind, link, batch, now)
            batch = set()
    _insert_links(bind, link, batch, now)


def _insert_links(bind: Any, link: Any, pairs: set[tuple[str, str]], now: datetime) -> None:
    if pairs:
        bind.execute(
            link.insert(),
            [
                {"email": e, "phone_number": p, "created_at": now, "cause": "backfill"}
                for e, p in sorted(pairs)
            ],
        )


def downgrade() -> None:
    op.drop_table("feed_state")
    op.drop_index("ix_change_subject_contact_id", table_name="change_subject")
    op.drop_table("change_subject")
    op.drop_index("ix_change_unsequenced", table_name="change")
    op.drop_index("ix_change_seq", table_name="change")
    op.drop_table("change")
    op.drop_index("ix_link_phone_number", table_name="link")
    op.drop_index("ix_link_email_phone_number", table_name="link")
    op.drop_table("link")
