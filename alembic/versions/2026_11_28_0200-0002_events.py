"""events: idempotency ledger, inbox (durable outbox) and dead letters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNPUBLISHED = sa.text("published_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "processed_event",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_event")),
    )
    op.create_table(
        "event_inbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone_number", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_event_inbox")),
    )
    op.create_index("ix_event_inbox_event_id", "event_inbox", ["event_id"], unique=False)
    op.create_index("ix_event_inbox_published_at", "event_inbox", ["published_at"], unique=False)
    op.create_index(
        "ix_event_inbox_unpublished",
        "event_inbox",
        ["seq"],
        unique=False,
        postgresql_where=UNPUBLISHED,
        sqlite_where=UNPUBLISHED,
    )
    op.create_table(
        "dead_letter",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_dead_letter")),
    )


def downgrade() -> None:
    op.drop_table("dead_letter")
    for name in ("ix_event_inbox_unpublished", "ix_event_inbox_published_at", "ix_event_inbox_event_id"):
        op.drop_index(name, table_name="event_inbox")
    op.drop_table("event_inbox")
    op.drop_table("processed_event")
