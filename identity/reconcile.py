"""The rules of SPEC.md as pure decisions over plain values.

``decide`` says what a request does to the clusters it touches; ``build_view``
says what the answer is. Neither touches a database, so both are unit-tested
directly and shared by the HTTP path and the event workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from identity.normalize import Identifiers


@dataclass(frozen=True)
class Row:
    """One live contact row, as far as the rules care."""

    id: int
    email: str | None
    phone: str | None
    linked_id: int | None
    created_at: datetime

    @property
    def age(self) -> tuple[datetime, int]:
        """SPEC: "older" means smaller (createdAt, id)."""
        return (self.created_at, self.id)


class Insert(Enum):
    NOTHING = "nothing"
    PRIMARY = "primary"
    SECONDARY = "secondary"


@dataclass(frozen=True)
class Decision:
    """What one request does: which root wins, which roots are demoted, what row is added."""

    primary_id: int | None  # None only when a new primary is inserted
    demote: tuple[int, ...]  # roots that become secondaries of primary_id
    insert: Insert
    #: record a link for the request's pair (SPEC "The graph's edges"): a merge, or a
    #: rule-4 request whose pair no one live contact and no link holds yet
    link: bool = False

    @property
    def writes(self) -> bool:
        return bool(self.demote) or self.insert is not Insert.NOTHING or self.link


@dataclass(frozen=True)
class ClusterView:
    """The answer of POST /identify."""

    primary_id: int
    emails: tuple[str, ...]
    phone_numbers: tuple[str, ...]
    secondary_ids: tuple[int, ...]
    #: values of the request that a guard ignored (identity.guards.policy.Ignored)
    ignored: tuple[Any, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "contact": {
                "primaryContactId": self.primary_id,
                "emails": list(self.emails),
                "phoneNumbers": list(self.phone_numbers),
                "secondaryContactIds": list(self.secondary_ids),
            }
        }
        if self.ignored:
            out["ignored"] = [i.to_json() for i in self.ignored]
        return out


def decide(
    identifiers: Identifiers,
    roots: Sequence[Row],
    members: Iterable[Row],
    *,
    pair_linked: bool = False,
) -> Decision:
    """Apply rules 1-4 of SPEC.md.

    ``roots`` are the primaries of every cluster that holds the request's email or
    phone; ``members`` every live row of those clusters (roots included). Every
    row holding the request's email or phone is among them, so "the request
    brings something new" is decided from them alone. ``pair_linked``: a link holds the
    request's exact pair.
    """
    held_emails = set()
    held_phones = set()
    held_pair = False
    for row in members:
        held_emails.add(row.email)
        held_phones.add(row.phone)
        held_pair = held_pair or (row.email, row.phone) == (identifiers.email, identifiers.phone)
    return decide_held(
        identifiers,
        roots,
        held_email=identifiers.email in held_emails,
        held_phone=identifiers.phone in held_phones,
        held_pair=held_pair or pair_linked,
    )


def decide_held(
    identifiers: Identifiers,
    roots: Sequence[Row],
    *,
    held_email: bool,
    held_phone: bool,
    held_pair: bool = False,
) -> Decision:
    """Rules 1-4 when the caller already knows whether the clusters of ``roots`` hold
    the request's email and phone, and whether one live contact or one link holds the
    pair itself (PostgreSQL answers that in SQL, without loading the members:
    ``identity.pg_identify``)."""
    if not roots:
        return Decision(primary_id=None, demote=(), insert=Insert.PRIMARY)  # rule 1
    winner = min(roots, key=lambda r: r.age)
    demote = tuple(sorted(r.id for r in roots if r.id != winner.id))  # rule 3
    brings_new = (identifiers.email is not None and not held_email) or (
        identifiers.phone is not None and not held_phone
    )
    insert = Insert.SECONDARY if brings_new else Insert.NOTHING  # rule 2 / rule 4
    return Decision(
        primary_id=winner.id,
        demote=demote,
        insert=insert,
        link=needs_link(identifiers, merges=bool(demote), inserts=brings_new, held_pair=held_pair),
    )


def needs_link(identifiers: Identifiers, *, merges: bool, inserts: bool, held_pair: bool) -> bool:
    """SPEC "The graph's edges": a request asserts its pair; the assertion is recorded by
    a contact holding exactly the pair (rules 1 and 2 insert one) or else by a link.
    Rule 3 inserts no contact, so it always records one; rule 4 records one only when no
    live contact and no link holds the pair yet. A one-identifier request never does."""
    if identifiers.email is None or identifiers.phone is None or inserts:
        return False
    return merges or not held_pair


def build_view(primary_id: int, rows: Iterable[Row]) -> ClusterView:
    """The cluster answer: the primary's values first, then by row creation order."""
    ordered = sorted(rows, key=lambda r: (r.id != primary_id, r.age))
    emails = dict.fromkeys(r.email for r in ordered if r.email is not None)
    phones = dict.fromkeys(r.phone for r in ordered if r.phone is not None)
    return ClusterView(
        primary_id=primary_id,
        emails=tuple(emails),
        phone_numbers=tuple(phones),
        secondary_ids=tuple(sorted(r.id for r in ordered if r.id != primary_id)),
    )
