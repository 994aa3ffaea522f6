"""Partition ownership across worker processes (issue 13), with real processes on loopback.

Three worker processes for two partitions: two for partition 0 (an owner and a standby)
and one for partition 1. A producer publishes a stream of events straight to Redis (no
inbox, so no re-drive can hide a lost message). The owner of partition 0 is SIGKILLed
mid-stream: the standby takes over within the lease. The killed worker is started again
(as a supervisor would) and waits as the standby. Then the new owner is SIGSTOPped inside
an apply transaction, past its lease, and SIGCONTed after the standby took over: its
writes are refused by the fence (the transaction rolls back), the new owner applies the
message instead. Every event is applied once, and in publish order per key.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from identity.events.messages import partition_for
from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import AsyncStack, Proc, RedisServer, wait_applied
from tests.support.invariants import check_invariants
from tests.support.processes import PrivatePostgres, wait_until
from worker.publisher import Publisher

pytestmark = pytest.mark.slow
PARTITIONS = N = 2
LEASE_S = 3
#: A standby polls every third of the lease: it takes over at most this long after the
#: owner's last renewal, itself at most a third of a lease before the owner died.
TAKEOVER_BOUND_S = LEASE_S + LEASE_S / 3 + 1.0
KEYS = 24  # emails, about half in each partition
ROUNDS = 12  # events per email: below GENERIC_THRESHOLD's 20 partners


def email_of(key: int) -> str:
    return f"k{key}@failover.test"


def fence_email() -> str:
    """An email of partition 0 that the stream does not use."""
    n = 0
    while partition_for(f"e:fence{n}@failover.test", PARTITIONS) != 0:
        n += 1
    return f"fence{n}@failover.test"


def lease(engine: Engine, partition: int) -> tuple[str, int] | None:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT owner, token FROM partition_lease"
                " WHERE partition = :p AND expires_at > clock_timestamp()"
            ),
            {"p": partition},
        ).first()
    return None if row is None else (row.owner, int(row.token))


def owned_by(engine: Engine, partition: int, proc: Proc) -> bool:
    held = lease(engine, partition)
    return held is not None and f"/{proc.process.pid}/" in held[0]


def signal_group(proc: Proc, sig: int) -> None:
    os.killpg(proc.process.pid, sig)


@pytest.fixture
def stack(
    private_pg: PrivatePostgres, redis_server: RedisServer, tmp_path: Path
) -> Iterator[AsyncStack]:
    stack = AsyncStack(
        private_pg.url,
        redis_server,
        PARTITIONS,
        tmp_path,
        extra_env={"PARTITION_LEASE_S": str(LEASE_S), "GENERIC_THRESHOLD": "0"},
    )
    try:
        yield stack
    finally:
        for proc in stack.procs.values():  # a stopped process must be able to die
            if proc.process.poll() is None:
                signal_group(proc, signal.SIGCONT)
        stack.close()


def spawn_worker(stack: AsyncStack, name: str, partition: int) -> Proc:
    import sys

    proc = stack.spawn(name, [sys.executable, "-m", "worker.partition", str(partition)])
    wait_until(
        lambda: " ready." in proc.log() or proc.process.poll() is not None,
        timeout_s=60,
        what=f"{name} to be ready",
    )
    assert proc.process.poll() is None, proc.log()[-3000:]
    return proc


def test_one_owner_per_partition_failover_and_fencing(
    private_pg: PrivatePostgres, redis_server: RedisServer, stack: AsyncStack
) -> None:
    engine = create_engine(private_pg.url)
    settings = make_settings(
        private_pg.url, redis_url=Secret(redis_server.url), identity_partitions=PARTITIONS
    )
    published: list[dict[str, object]] = []
    stop = threading.Event()

    def produce() -> None:
        with Publisher(settings, events_per_message=8) as publisher:
            for r in range(ROUNDS):
                events = [
                    {"eventId": f"s-{k}-{r}", "email": email_of(k),
                     "phoneNumber": f"5{k:03d}{r:03d}"}
                    for k in range(KEYS)
                ]  # fmt: skip
                publisher.publish(events)
                published.extend(events)
                if stop.wait(0.25):
                    return

    try:
        first = spawn_worker(stack, "p0-first", 0)
        wait_until(lambda: owned_by(engine, 0, first), timeout_s=20, what="p0-first to own p0")
        standby = spawn_worker(stack, "p0-standby", 0)
        one = spawn_worker(stack, "p1", 1)
        wait_until(lambda: owned_by(engine, 1, one), timeout_s=20, what="p1 to own p1")
        time.sleep(LEASE_S)  # the standby polled and stayed a standby
        assert owned_by(engine, 0, first), "the standby took a live lease"
        assert "owner now" not in standby.log()
        token_before = lease(engine, 0)[1]  # type: ignore[index]

        producer = threading.Thread(target=produce)
        producer.start()
        # Mid-stream, and mid-batch: the owner waits on a row lock the test holds when killed.
        hot = next(e for e in map(email_of, range(KEYS)) if partition_for(f"e:{e}", N) == 0)
        wait_until(lambda: contact_of(engine, hot), timeout_s=20, what="the first round")
        with engine.connect() as blocker:
            blocker.execute(text("SELECT id FROM contact WHERE email = :e FOR UPDATE"), {"e": hot})
            wait_until(
                lambda: blocked_on_lock(engine), timeout_s=20, interval_s=0.05,
                what="the owner to wait on the row lock mid-transaction",
            )  # fmt: skip
            signal_group(first, signal.SIGKILL)
            killed_at = time.monotonic()
            first.process.wait(timeout=10)
            blocker.rollback()
        wait_until(
            lambda: owned_by(engine, 0, standby), timeout_s=3 * LEASE_S, interval_s=0.05,
            what="the standby to take partition 0 over",
        )  # fmt: skip
        takeover_s = time.monotonic() - killed_at
        assert lease(engine, 0)[1] == token_before + 1  # type: ignore[index]
        # The lease row changes first; the put-back and its log line follow in the same round.
        wait_until(
            lambda: "owner now" in standby.log(), timeout_s=LEASE_S, interval_s=0.05,
            what="the new owner to log its takeover",
        )  # fmt: skip
        assert "1 message(s) a previous owner held put back" in standby.log()
        restarted = spawn_worker(stack, "p0-restarted", 0)  # the supervisor's restart
        producer.join(timeout=60)
        stream_ids = {str(e["eventId"]) for e in published}
        wait_applied(engine, stream_ids, stack, timeout_s=60)
        assert not owned_by(engine, 0, restarted)

        # The owner, paused inside an apply transaction, past its lease.
        fenced = fence_email()
        fence_events = [
            {"eventId": f"f-{i}", "email": fenced, "phoneNumber": f"9000{i:02d}"} for i in range(4)
        ]
        with Publisher(settings) as publisher:
            publisher.publish(fence_events[:1])
            wait_applied(engine, {"f-0"}, stack, timeout_s=30)
            with engine.connect() as blocker:
                blocker.execute(
                    text("SELECT id FROM contact WHERE email = :e FOR UPDATE"), {"e": fenced}
                )
                publisher.publish(fence_events[1:2])  # the message the owner will hold
                wait_until(
                    lambda: blocked_on_lock(engine), timeout_s=20, interval_s=0.05,
                    what="the owner to wait on the row lock mid-transaction",
                )  # fmt: skip
                signal_group(standby, signal.SIGSTOP)
                stopped_at = time.monotonic()
                blocker.rollback()  # its statement completes; the process stays frozen
            for event in fence_events[2:]:  # later events of the same key, in order
                publisher.publish([event])
        token_paused = lease(engine, 0)
        wait_until(
            lambda: owned_by(engine, 0, restarted), timeout_s=3 * LEASE_S, interval_s=0.05,
            what="the restarted worker to take partition 0 over from the frozen owner",
        )  # fmt: skip
        second_takeover_s = time.monotonic() - stopped_at
        signal_group(standby, signal.SIGCONT)
        wait_applied(engine, stream_ids | {str(e["eventId"]) for e in fence_events}, stack, 60)
        wait_until(
            lambda: "writes refused by the fence" in standby.log(), timeout_s=3 * LEASE_S,
            what="the resumed old owner to be refused by the fence",
        )  # fmt: skip
        wait_until(
            lambda: "lease lost" in standby.log(), timeout_s=3 * LEASE_S,
            what="the resumed old owner to stop consuming",
        )  # fmt: skip
        assert token_paused is not None and lease(engine, 0)[1] == token_paused[1] + 1  # type: ignore[index]

        # Every event applied once: one ledger row and one contact row per event.
        everything = published + fence_events
        with engine.connect() as conn:
            ledger = conn.execute(text("SELECT count(*) FROM processed_event")).scalar_one()
            contacts = conn.execute(
                text("SELECT email, phone_number, id FROM contact WHERE deleted_at IS NULL")
            ).all()
            assert check_invariants(conn) == []
        assert ledger == len(everything)
        assert len(contacts) == len(everything)
        ids = {(r.email, r.phone_number): r.id for r in contacts}
        # Per-key order: each email's rows were created in the order its events were published.
        by_email: dict[str, list[int]] = {}
        for event in everything:
            by_email.setdefault(str(event["email"]), []).append(
                ids[(str(event["email"]), str(event["phoneNumber"]))]
            )
        for email, created in by_email.items():
            assert created == sorted(created), f"{email}: applied out of order {created}"
        assert takeover_s <= TAKEOVER_BOUND_S and second_takeover_s <= TAKEOVER_BOUND_S
        print(
            f"\nfailover: {len(everything)} events applied once, per-key order kept;"
            f" takeover after SIGKILL {takeover_s:.2f}s, after SIGSTOP {second_takeover_s:.2f}s"
            f" (PARTITION_LEASE_S={LEASE_S}, bound {TAKEOVER_BOUND_S:.1f}s);"
            " the resumed owner was fenced"
        )
    finally:
        stop.set()
        engine.dispose()


def contact_of(engine: Engine, email: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM contact WHERE email = :e"), {"e": email}).first()
    return found is not None


def blocked_on_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return bool(waiting)


def test_a_clean_stop_hands_the_partition_over_without_waiting_for_the_lease(
    private_pg: PrivatePostgres, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGTERM (systemd, honcho, docker stop): the owner releases its lease on the way out,
    so the standby takes over at its next poll, not after the lease runs out."""
    lease_s = 9  # the standby polls every 3 s; the lease alone would take up to 9 s
    stack = AsyncStack(
        private_pg.url, redis_server, 1, tmp_path, extra_env={"PARTITION_LEASE_S": str(lease_s)}
    )
    engine = create_engine(private_pg.url)
    try:
        owner = spawn_worker(stack, "owner", 0)
        wait_until(lambda: owned_by(engine, 0, owner), timeout_s=20, what="the owner")
        standby = spawn_worker(stack, "standby", 0)
        time.sleep(1.0)
        signal_group(owner, signal.SIGTERM)
        stopped_at = time.monotonic()
        owner.process.wait(timeout=30)
        assert "lease released" in owner.log()
        wait_until(
            lambda: owned_by(engine, 0, standby), timeout_s=lease_s, interval_s=0.05,
            what="the standby to take the released lease",
        )  # fmt: skip
        handover_s = time.monotonic() - stopped_at
        assert handover_s < lease_s / 3 + 2.0, handover_s
        print(f"\nclean stop: standby owner {handover_s:.2f}s after SIGTERM (lease {lease_s}s)")
    finally:
        stack.close()
        engine.dispose()
