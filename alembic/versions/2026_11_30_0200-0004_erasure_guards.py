"""erasure and guards: tombstones, erased and suppressed value hashes, generic values

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 02:00:00

- ``contact``: a tombstone (deleted, neither value) is allowed: the identifier check now
  binds live rows only.
- ``erased_value``: a keyed hash (never the value) of each erased value, with when it was
  erased: an event accepted before that and applied after it is applied without the
  value; ``suppressed`` ones are ignored from then on (SPEC "Guards").
- ``service_key``: the hash key used when SUPPRESSION_HASH_KEY is not set (one row).
- ``generic_value``: values marked generic (a shop's counter phone), listed for operators;
  a mark an operator cleared stays with ``cleared_at`` and ``baseline`` (its partners then).
- ``processed_event.ignored``: which fields a guard ignored when the event was applied.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("processed_event", sa.Column("ignored", sa.Text(), nullable=True))
    with op.batch_alter_table("contact") as batch:
        batch.drop_constraint(op.f("ck_contact_has_identifier"), type_="check")
        batch.create_check_constraint(
            "has_identifier",
            "deleted_at IS NOT NULL OR email IS NOT NULL OR phone_number IS NOT NULL",
        )
    op.create_table(
        "erased_value",
        sa.Column("value_hash", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("suppressed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("value_hash", name=op.f("pk_erased_value")),
    )
    op.create_table(
        "service_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_key")),
    )
    op.create_table(
        "generic_value",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("field", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("partners", sa.Integer(), nullable=False),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("baseline", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generic_value")),
    )
    op.create_index(
        "ix_generic_value_field_value", "generic_value", ["field", "value"], unique=True
    )


def downgrade() -> None:
    with op.batch_alter_table("processed_event") as batch:
        batch.drop_column("ignored")
    op.drop_index("ix_generic_value_field_value", table_name="generic_value")
    op.drop_table("generic_value")
    op.drop_table("service_key")
    op.drop_table("erased_value")
    op.execute("DELETE FROM contact WHERE email IS NULL AND phone_number IS NULL")
    with op.batch_alter_table("contact") as batch:
        batch.drop_constraint(op.f("ck_contact_has_identifier"), type_="check")
        batch.create_check_constraint(
            "has_identifier", "email IS NOT NULL OR phone_number IS NOT NULL"
        )
