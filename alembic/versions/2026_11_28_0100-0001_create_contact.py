"""create contact

Revision ID: 0001
Revises:
Create Date: 2026-11-28 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "contact",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("linked_id", sa.Integer(), nullable=True),
        sa.Column("link_precedence", sa.String(length=9), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "link_precedence IN ('primary', 'secondary')",
            name=op.f("ck_contact_link_precedence_valid"),
        ),
        sa.CheckConstraint(
            "(link_precedence = 'primary' AND linked_id IS NULL)"
            " OR (link_precedence = 'secondary' AND linked_id IS NOT NULL)",
            name=op.f("ck_contact_link_matches_precedence"),
        ),
        sa.CheckConstraint(
            "email IS NOT NULL OR phone_number IS NOT NULL",
            name=op.f("ck_contact_has_identifier"),
        ),
        sa.ForeignKeyConstraint(
            ["linked_id"], ["contact.id"], name=op.f("fk_contact_linked_id_contact")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact")),
    )
    for name, column in (
        ("ix_contact_email_live", "email"),
        ("ix_contact_phone_number_live", "phone_number"),
        ("ix_contact_linked_id_live", "linked_id"),
    ):
        op.create_index(
            name, "contact", [column], unique=False, postgresql_where=LIVE, sqlite_where=LIVE
        )


def downgrade() -> None:
    for name in ("ix_contact_linked_id_live", "ix_contact_phone_number_live", "ix_contact_email_live"):
        op.drop_index(name, table_name="contact")
    op.drop_table("contact")
