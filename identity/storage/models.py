"""SQLAlchemy 2 models. The schema itself is built by Alembic migrations only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from identity.storage.db import UTCDateTime

# Constraint names are stable across databases and migrations.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LIVE = text("deleted_at IS NULL")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Contact(Base):
    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone_number: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    linked_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("contact.id"))
    link_precedence: Mapped[str] = mapped_column(String(9))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "link_precedence IN ('primary', 'secondary')", name="link_precedence_valid"
        ),
        # A primary has no link; a secondary always has one (SPEC I1, structurally).
        CheckConstraint(
            "(link_precedence = 'primary' AND linked_id IS NULL)"
            " OR (link_precedence = 'secondary' AND linked_id IS NOT NULL)",
            name="link_matches_precedence",
        ),
        # A live contact holds a value; a tombstone (an erasure emptied it) holds none.
        CheckConstraint(
            "deleted_at IS NOT NULL OR email IS NOT NULL OR phone_number IS NOT NULL",
            name="has_identifier",
        ),
        # Lookups touch live rows only: partial indexes keep them index scans and small.
        Index("ix_contact_email_live", "email", postgresql_where=LIVE, sqlite_where=LIVE),
        Index(
            "ix_contact_phone_number_live",
            "phone_number",
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        ),
        Index("ix_contact_linked_id_live", "linked_id", postgresql_where=LIVE, sqlite_where=LIVE),
    )


# --- Asynchronous events (docs/ASYNC.md) ---------------------------------------------

# A 64-bit sequence on PostgreSQL; SQLite only auto-increments an INTEGER primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")
UNPUBLISHED = text("published_at IS NULL")


class ProcessedEvent(Base):
    """The idempotency ledger: one row per event applied, written with the change itself."""

    __tablename__ = "processed_event"

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the values a guard ignored when it was applied, as "field:reason,..." (no value)
    ignored: Mapped[str | None] = mapped_column(Text)


class EventInbox(Base):
    """Events accepted by POST /events and not applied yet (the durable outbox).

    The relay publishes unpublished rows in ``seq`` order and re-drives rows that
    stay unapplied; the worker deletes a row in the transaction that applies it.
    """

    __tablename__ = "event_inbox"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(Text)
    phone_number: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    source: Mapped[str | None] = mapped_column(Text)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_event_inbox_event_id", "event_id"),
        Index("ix_event_inbox_published_at", "published_at"),
        # The relay's "what is new" scan touches unpublished rows only.
        Index(
            "ix_event_inbox_unpublished",
            "seq",
            postgresql_where=UNPUBLISHED,
            sqlite_where=UNPUBLISHED,
        ),
    )


class DeadLetter(Base):
    """An event that kept failing, with its payload and last error, until replayed."""

    __tablename__ = "dead_letter"

    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    payload: Mapped[Any] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- The graph on record (SPEC "Contract v2"; docs/ARCHITECTURE.md, "Links") -----------


class Link(Base):
    """An assertion that an email and a phone belong to one person, held by no one contact.

    Written by rule 3 (a merge) and by rule 4 when the pair is not yet on record; the
    connected components of contacts and links are the clusters (I4).
    """

    __tablename__ = "link"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(Text)
    phone_number: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cause: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_link_email_phone_number", "email", "phone_number", unique=True),
        Index("ix_link_phone_number", "phone_number"),
    )


UNSEQUENCED = text("seq IS NULL")


class Change(Base):
    """One effect of a transaction on the graph, written in that transaction (ids only).

    ``id`` is allocated when the row is written; ``seq``, the feed's order, is given
    later by :func:`identity.feed.changes.sequence_pending` to committed rows only, so a
    follower of ``seq`` never misses a change (docs/ARCHITECTURE.md, "The change feed").
    """

    __tablename__ = "change"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    cause: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_change_seq", "seq", unique=True),
        Index(
            "ix_change_unsequenced", "id", postgresql_where=UNSEQUENCED, sqlite_where=UNSEQUENCED
        ),
    )


class ChangeSubject(Base):
    """Which contacts a change is about (its primaries and the contact it created):
    how ``GET /persons/{id}/history`` finds a person's changes by index."""

    __tablename__ = "change_subject"

    change_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("change.id", ondelete="CASCADE"), primary_key=True
    )
    contact_id: Mapped[int] = mapped_column(Integer, primary_key=True)

    __table_args__ = (Index("ix_change_subject_contact_id", "contact_id"),)


class FeedState(Base):
    """One row: the last seq given out and the last seq pruned (410 below it)."""

    __tablename__ = "feed_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigId)
    pruned_through: Mapped[int] = mapped_column(BigId)


# --- Erasure and guards (SPEC "Erasure", "Guards"; docs/ARCHITECTURE.md) ---------------


class ErasedValue(Base):
    """A keyed hash of an erased value (never the value): events accepted before
    ``erased_at`` are applied without it; a ``suppressed`` one is ignored for good."""

    __tablename__ = "erased_value"

    value_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # "email" | "phoneNumber"
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime())
    suppressed: Mapped[bool] = mapped_column(Boolean)


class ServiceKey(Base):
    """The hash key used when SUPPRESSION_HASH_KEY is not configured (one row)."""

    __tablename__ = "service_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Text)


class GenericValue(Base):
    """A value marked generic: asserted with more than GENERIC_THRESHOLD partners."""

    __tablename__ = "generic_value"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    field: Mapped[str] = mapped_column(Text)  # "email" | "phoneNumber"
    value: Mapped[str] = mapped_column(Text)
    partners: Mapped[int] = mapped_column(Integer)
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cause: Mapped[str | None] = mapped_column(Text)
    #: set when an operator cleared the mark; ``baseline`` the partners it had then
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    baseline: Mapped[int] = mapped_column(Integer, server_default=text("0"))

    __table_args__ = (Index("ix_generic_value_field_value", "field", "value", unique=True),)


class PartitionLease(Base):
    """Who consumes an event partition, until when, and the fencing token of that tenure."""

    __tablename__ = "partition_lease"

    partition: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(Text)
    token: Mapped[int] = mapped_column(BigInteger)  # grows by one on every takeover
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
