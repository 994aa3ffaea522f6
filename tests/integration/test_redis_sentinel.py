"""Redis Sentinel (issue 13): the broker, the relay, the workers and the API on a
``sentinel://`` REDIS_URL, with a real sentinel, a Redis primary and its replica. The
primary is SIGKILLed under event load; Sentinel promotes the replica; the processes
reconnect by themselves and nothing accepted is lost (what the old primary took and had
not replicated is re-driven from the PostgreSQL inbox)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import AsyncStack, wait_applied
from tests.support.invariants import assert_consistent
from tests.support.processes import PrivatePostgres, wait_until
from tests.support.sentinel import SentinelSet, running_sentinel_set
from tests.support.server import Server
from worker.publisher import Publisher

pytestmark = pytest.mark.slow
PARTITIONS = 2


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    with running_sentinel_set(tmp_path) as servers:
        yield servers


def batch(n: int, size: int = 10) -> list[dict[str, object]]:
    return [
        {"eventId": f"sent-{n}-{i}", "email": f"s{(n * size + i) % 40}@sentinel.test",
         "phoneNumber": f"8{(n * size + i) % 29:05d}"}
        for i in range(size)
    ]  # fmt: skip


def test_a_redis_failover_under_event_load_loses_nothing_accepted(
    private_pg: PrivatePostgres, sentinel_set: SentinelSet, tmp_path: Path
) -> None:
    primary, replica, sentinel = sentinel_set
    env = {"REDIS_URL": sentinel.url, "REDIS_SENTINEL_MASTER": "mymaster"}
    stack = AsyncStack(private_pg.url, primary, PARTITIONS, tmp_path, extra_env=env)
    server = Server(
        env={"DATABASE_URL": private_pg.url, "IDENTITY_PARTITIONS": str(PARTITIONS), **env}
    )
    engine = create_engine(private_pg.url)
    accepted: list[dict[str, object]] = []
    statuses: list[int] = []
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.is_set():
            events = batch(n)
            status, _, body = server.request("POST", "/events", events, timeout=10)
            statuses.append(status)
            if status == 202:
                accepted.extend(events)
                n += 1
            else:
                assert status == 503 and json.loads(body)["error"], (status, body)
            time.sleep(0.05)

    try:
        stack.start_workers()
        stack.start_relay()
        server.start()
        thread = threading.Thread(target=produce)
        thread.start()
        time.sleep(2.0)
        before = len(accepted)
        primary.stop()  # SIGKILL: what it had not replicated yet is gone with it
        killed_at = time.monotonic()
        wait_until(
            lambda: str(replica.port) in sentinel.master_port_answer(), timeout_s=30,
            interval_s=0.1, what="Sentinel to promote the replica",
        )  # fmt: skip
        promoted_s = time.monotonic() - killed_at
        time.sleep(3.0)  # load goes on against the promoted replica
        stop.set()
        thread.join(timeout=30)
        settings = make_settings(
            private_pg.url, redis_url=Secret(sentinel.url), identity_partitions=PARTITIONS
        )
        with Publisher(settings) as publisher:  # a direct producer resolves the new primary
            direct = [{"eventId": "sent-direct", "email": "d@sentinel.test", "phoneNumber": "8999"}]
            publisher.publish(direct)
        wait_applied(engine, {str(e["eventId"]) for e in accepted + direct}, stack, timeout_s=60)

        status, _, body = server.request("GET", "/queues")  # depths from the new primary
        assert status == 200, body
        assert all(q["owner"] for q in json.loads(body)["queues"]), body
        assert before > 0 and len(accepted) > before, "load before and after the failover"
        assert set(statuses) <= {202, 503}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM dead_letter")).scalar_one() == 0
            pairs = [(str(e["email"]), str(e["phoneNumber"])) for e in accepted + direct]
            assert_consistent(conn, pairs)
        print(
            f"\nsentinel failover: promoted {promoted_s:.1f}s after the primary was killed;"
            f" {len(accepted)} events accepted ({statuses.count(503)} x 503), all applied"
        )
    finally:
        stop.set()
        server.stop()
        stack.close()
        engine.dispose()
