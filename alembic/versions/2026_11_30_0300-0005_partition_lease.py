"""partition ownership: one lease row per event partition, with a fencing token

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 03:00:00

- ``partition_lease``: who consumes partition N (``owner``), until when (``expires_at``,
  the database's clock), and ``token``, which grows by one on every takeover. The worker's
  apply transaction checks its token against this row (``identity.events.lease``), so an
  owner that lost its lease cannot commit (docs/ASYNC.md, "Partition ownership").
  Rows are created by the first worker of each partition.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partition_lease",
        sa.Column("partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("partition", name=op.f("pk_partition_lease")),
    )


def downgrade() -> None:
    op.drop_table("partition_lease")
