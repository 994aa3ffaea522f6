"""The graph on record, read straight from the tables: links, changes, and what they imply."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from tests.support.invariants import model_clusters

OWNED_TABLES = (
    "contact",
    "link",
    "change",
    "change_subject",
    "feed_state",
    "processed_event",
    "event_inbox",
    "dead_letter",
)


def table_snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the service owns, to prove a read wrote nothing."""
    out = {}
    with engine.connect() as conn:
        for table in OWNED_TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()  # noqa: S608
            out[table] = sorted((tuple(str(v) for v in r) for r in rows), key=str)
    return out


def stored_links(conn: Connection) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in conn.execute(text("SELECT email, phone_number FROM link")).all()}


def assertion_clusters(conn: Connection) -> set[frozenset[str]]:
    """Connected components of the recorded assertions (live contacts and links), as sets of
    namespaced values: SPEC I4's clusters, computed without the linked_id column."""
    pairs = conn.execute(
        text(
            "SELECT email, phone_number FROM contact WHERE deleted_at IS NULL"
            " UNION ALL SELECT email, phone_number FROM link"
        )
    ).all()
    return model_clusters((email, phone) for email, phone in pairs)


def replay(changes: list[dict[str, Any]]) -> dict[int, int]:
    """Rebuild ``contact id -> primary id`` of live contacts from the feed alone."""
    primary: dict[int, int] = {}
    for change in changes:
        kind, p = change["kind"], change["payload"]
        if kind in ("person.created", "contact.added"):
            primary[p["contactId"]] = p["primaryContactId"]
        elif kind == "person.merged":
            absorbed = set(p["absorbedPrimaryIds"])
            for contact, root in list(primary.items()):
                if root in absorbed:
                    primary[contact] = p["primaryContactId"]
        elif kind == "person.split":
            for person in p["persons"]:
                for contact in person["contactIds"]:
                    primary[contact] = person["primaryContactId"]
        elif kind == "contacts.erased":
            for contact in p["tombstonedContactIds"]:
                primary.pop(contact, None)
            before, after = p["previousPrimaryId"], p["primaryContactId"]
            for contact, root in list(primary.items()):
                if root == before and after is not None:
                    primary[contact] = after
    return primary


def live_primaries(conn: Connection) -> dict[int, int]:
    rows = conn.execute(
        text("SELECT id, coalesce(linked_id, id) FROM contact WHERE deleted_at IS NULL")
    ).all()
    return {int(r[0]): int(r[1]) for r in rows}


def feed_problems(seqs: Sequence[int], numbered: int) -> list[str]:
    """What is wrong with the seqs a follower saw, given that ``numbered`` changes are on
    record: each seq exactly once, strictly increasing, with no gap: exactly 1..numbered."""
    problems = []
    repeated = sorted(s for s, n in Counter(seqs).items() if n > 1)
    if repeated:
        problems.append(f"seqs seen more than once: {repeated[:10]}")
    backwards = [(a, b) for a, b in zip(seqs, seqs[1:], strict=False) if b <= a]
    if backwards:
        problems.append(f"seqs not strictly increasing: {backwards[:10]}")
    missing = sorted(set(range(1, numbered + 1)) - set(seqs))
    if missing:
        problems.append(f"{len(missing)} seqs never seen (gaps): {missing[:10]}")
    beyond = sorted(set(seqs) - set(range(1, numbered + 1)))
    if beyond:
        problems.append(f"seqs outside 1..{numbered}: {beyond[:10]}")
    return problems


def unrecorded_assertions(
    conn: Connection, accepted: Iterable[tuple[str | None, str | None]]
) -> list[tuple[str, str]]:
    """Accepted (email, phone) pairs that neither a live contact nor a link holds: each
    is an assertion lost (SPEC "The graph's edges"); empty when every one is on record."""
    held = {
        (r[0], r[1])
        for r in conn.execute(
            text("SELECT email, phone_number FROM contact WHERE deleted_at IS NULL")
        ).all()
    } | stored_links(conn)
    return sorted(
        {(e, p) for e, p in accepted if e is not None and p is not None and (e, p) not in held}
    )
