"""Partition ownership: a lease per event partition, with a fencing token.

One row of ``partition_lease`` per partition says who consumes it (``owner``) and until
when (``expires_at``, on the database's clock, so that the hosts' clocks never matter).
``token`` grows by one on every takeover. The owner renews well before expiry; a standby
takes the lease only once it has expired. The apply transaction of a worker calls
:func:`check_fence` with the token it was given: a paused owner whose lease was taken
over meanwhile cannot commit, whatever its own clock or heartbeat believes
(docs/ASYNC.md, "Partition ownership").

PostgreSQL only: the embedded SQLite database has no workers. Each function takes an open
connection; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.engine import Connection


class FenceLost(Exception):
    """The partition's lease now carries another token: this owner must not write."""

    def __init__(self, partition: int, token: int) -> None:
        super().__init__(f"partition {partition}: lease token {token} is no longer current")
        self.partition = partition
        self.token = token


@dataclass(frozen=True)
class Lease:
    partition: int
    owner: str
    token: int
    acquired_at: datetime
    expires_at: datetime
    live: bool  # expires_at is still ahead on the database's clock


def try_acquire(conn: Connection, *, partition: int, owner: str, lease_s: float) -> int | None:
    """Take the partition if nobody holds it (no row, or the lease expired): the new token.

    ``None`` while another owner's lease is live. The row lock of the UPDATE waits for
    an apply transaction that holds the row FOR SHARE (:func:`check_fence`), so a takeover
    never slips between a fence check and its commit.
    """
    row = conn.execute(
        text(
            "INSERT INTO partition_lease AS l (partition, owner, token, acquired_at, expires_at)"
            " VALUES (:p, :o, 1, clock_timestamp(),"
            "         clock_timestamp() + make_interval(secs => :s))"
            " ON CONFLICT (partition) DO UPDATE"
            " SET owner = :o, token = l.token + 1, acquired_at = clock_timestamp(),"
            "     expires_at = clock_timestamp() + make_interval(secs => :s)"
            " WHERE l.expires_at < clock_timestamp()"
            " RETURNING token"
        ),
        {"p": partition, "o": owner, "s": lease_s},
    ).scalar()
    return None if row is None else int(row)


def renew(conn: Connection, *, partition: int, owner: str, token: int, lease_s: float) -> bool:
    """Extend our lease; False when the token is no longer ours (someone took over).

    An expired lease that nobody took yet is still ours to renew: its token is unchanged,
    so nothing was applied by anyone else meanwhile.
    """
    row = conn.execute(
        text(
            "UPDATE partition_lease"
            " SET expires_at = clock_timestamp() + make_interval(secs => :s)"
            " WHERE partition = :p AND owner = :o AND token = :t"
            " RETURNING token"
        ),
        {"p": partition, "o": owner, "t": token, "s": lease_s},
    ).scalar()
    return row is not None


def release(conn: Connection, *, partition: int, owner: str, token: int) -> None:
    """Give the lease up (a clean shutdown): a standby may take it at once."""
    conn.execute(
        text(
            "UPDATE partition_lease SET expires_at = clock_timestamp()"
            " WHERE partition = :p AND owner = :o AND token = :t"
        ),
        {"p": partition, "o": owner, "t": token},
    )


def check_fence(conn: Connection, partition: int, token: int) -> None:
    """Raise :class:`FenceLost` unless ``token`` is the partition's current token.

    Called in the apply transaction, after its writes and before its commit: the row is
    held FOR SHARE until the commit, so a takeover (an UPDATE of that row) waits for this
    transaction to end, and a transaction that checks after a takeover rolls back.
    """
    held = conn.execute(
        text("SELECT 1 FROM partition_lease WHERE partition = :p AND token = :t FOR SHARE"),
        {"p": partition, "t": token},
    ).scalar()
    if held is None:
        raise FenceLost(partition, token)


def list_leases(conn: Connection) -> list[Lease]:
    """Every partition's lease, for GET /queues and the metrics."""
    rows = conn.execute(
        text(
            "SELECT partition, owner, token, acquired_at, expires_at,"
            " expires_at > clock_timestamp() AS live"
            " FROM partition_lease ORDER BY partition"
        )
    )
    return [
        Lease(r.partition, r.owner, int(r.token), r.acquired_at, r.expires_at, bool(r.live))
        for r in rows
    ]
