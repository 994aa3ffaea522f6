"""The lease and its fence on PostgreSQL (identity.events.lease), without workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from identity.events import lease
from identity.storage.db import run_in_transaction


@pytest.fixture
def engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM partition_lease WHERE partition >= 100"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM partition_lease WHERE partition >= 100"))
    engine.dispose()


def take(engine: Engine, owner: str, lease_s: float, partition: int = 100) -> int | None:
    return run_in_transaction(
        engine, lambda c: lease.try_acquire(c, partition=partition, owner=owner, lease_s=lease_s)
    )


def test_one_holder_tokens_grow_on_takeover_and_the_old_token_is_fenced(engine: Engine) -> None:
    assert take(engine, "a", 0.5) == 1
    assert take(engine, "b", 0.5) is None  # live: the standby waits
    with engine.begin() as conn:
        assert lease.renew(conn, partition=100, owner="a", token=1, lease_s=0.5)
        lease.check_fence(conn, 100, 1)
    time.sleep(0.6)
    assert take(engine, "b", 5) == 2  # expired: taken over, a new token
    with engine.begin() as conn:
        assert not lease.renew(conn, partition=100, owner="a", token=1, lease_s=5)
        with pytest.raises(lease.FenceLost):
            lease.check_fence(conn, 100, 1)
        lease.check_fence(conn, 100, 2)
        lease.release(conn, partition=100, owner="b", token=2)
    assert take(engine, "c", 5) == 3  # released: taken at once
    with engine.connect() as conn:
        [row] = [r for r in lease.list_leases(conn) if r.partition == 100]
    assert (row.owner, row.token, row.live) == ("c", 3, True)


def test_a_takeover_waits_for_an_apply_transaction_that_passed_the_fence(engine: Engine) -> None:
    """The fence holds the lease row FOR SHARE until the commit: no takeover slips in between."""
    assert take(engine, "a", 0.2, partition=101) == 1
    time.sleep(0.3)  # expired, not yet taken
    taken: list[float] = []
    with engine.connect() as apply_tx:
        lease.check_fence(apply_tx, 101, 1)  # still current: nobody took it yet
        started = time.monotonic()

        def steal() -> None:
            assert take(engine, "b", 5, partition=101) == 2
            taken.append(time.monotonic())

        thief = threading.Thread(target=steal)
        thief.start()
        time.sleep(0.5)
        assert not taken  # blocked on the row lock of the apply transaction
        apply_tx.commit()
        thief.join(timeout=10)
    assert taken and taken[0] - started >= 0.5
    with engine.connect() as conn, pytest.raises(lease.FenceLost):
        lease.check_fence(conn, 101, 1)
