"""Locks that keep SPEC.md's invariants under concurrency (see docs/ARCHITECTURE.md).

PostgreSQL: a transaction-scoped advisory lock per normalized identifier, taken
in sorted order, serializes every request that could insert a row holding that
identifier; the roots of the touched clusters are then locked ``FOR UPDATE`` in
id order (see ``services``), which serializes every change to a cluster's shape.

SQLite (embedded default): every transaction begins ``IMMEDIATE``, so writers are
already serialized and there is nothing more to lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.engine import Connection

from identity.normalize import Identifiers


def identifier_keys(identifiers: Identifiers) -> list[str]:
    """The lock keys of a request: one per present identifier, namespaced by kind."""
    keys = []
    if identifiers.email is not None:
        keys.append("e:" + identifiers.email)
    if identifiers.phone is not None:
        keys.append("p:" + identifiers.phone)
    return keys


def advisory_key(key: str) -> int:
    """A stable signed 64-bit lock id for ``key`` (same in every process and release)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Take transaction-scoped advisory locks on ``keys``, in one round trip, sorted.

    Sorting gives every transaction the same acquisition order, so two requests
    sharing keys wait for each other instead of deadlocking. Select-list
    expressions are evaluated left to right, which keeps that order.
    """
    if conn.dialect.name != "postgresql":
        return
    ids = sorted({advisory_key(k) for k in keys})
    if not ids:
        return
    calls = ", ".join(f"pg_advisory_xact_lock(:k{i})" for i in range(len(ids)))
    conn.execute(text(f"SELECT {calls}"), {f"k{i}": v for i, v in enumerate(ids)})
