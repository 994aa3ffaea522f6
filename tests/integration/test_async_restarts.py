"""Restarts under the asynchronous path (issue 5), with real processes: PostgreSQL stopped
while workers hold messages and producers keep publishing; Redis stopped under a served
API. Nothing accepted is lost, nothing is dead-lettered for an outage, /identify never
notices Redis, and everything recovers by itself.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import AsyncStack, RedisServer, wait_applied
from tests.support.invariants import assert_consistent
from tests.support.processes import PrivatePostgres, wait_until
from tests.support.server import Server
from worker.publisher import Publisher

pytestmark = pytest.mark.slow
PARTITIONS = 2


def batch(tag: str, n: int, size: int = 20) -> list[dict[str, object]]:
    return [
        {"eventId": f"{tag}-{n}-{i}", "email": f"u{(n * size + i) % 50}@async.test",
         "phoneNumber": f"7{(n * size + i) % 37:05d}"}
        for i in range(size)
    ]  # fmt: skip


def pairs(events: list[dict[str, object]]) -> list[tuple[str | None, str | None]]:
    return [(str(e["email"]), str(e["phoneNumber"])) for e in events]


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


@pytest.fixture
def stack(
    private_pg: PrivatePostgres, redis_server: RedisServer, tmp_path: Path
) -> Iterator[AsyncStack]:
    stack = AsyncStack(private_pg.url, redis_server, PARTITIONS, tmp_path)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def server(stack: AsyncStack) -> Iterator[Server]:
    env = {
        k: v
        for k, v in stack.env().items()
        if k in {"DATABASE_URL", "REDIS_URL", "IDENTITY_PARTITIONS"}
    }
    server = Server(env={**env, "DB_POOL_TIMEOUT_MS": "2000"}).start()
    yield server
    server.stop()
    server.remove_log()


def test_postgres_restart_workers_retry_and_no_accepted_event_is_lost(
    private_pg: PrivatePostgres, stack: AsyncStack, server: Server
) -> None:
    engine = create_engine(private_pg.url)
    accepted: list[dict[str, object]] = []
    answers: list[int] = []
    stop = threading.Event()

    def producer() -> None:
        """A checkout system: publishes batches; on 503 it sends the same batch again."""
        n = 0
        while not stop.is_set():
            events = batch("live", n)
            for _ in range(200):
                status, _, body = server.request("POST", "/events", events, timeout=10)
                answers.append(status)
                if status == 202:
                    accepted.extend(events)
                    break
                assert status == 503 and json.loads(body)["error"], (status, body)
                time.sleep(0.1)
            n += 1
            time.sleep(0.05)

    try:
        # The workers take their partitions' leases while PostgreSQL is up (a worker that
        # starts while it is down waits for it to take its lease: docs/ASYNC.md).
        stack.start_workers()
        wait_until(
            lambda: count(engine, "partition_lease WHERE expires_at > now()") == PARTITIONS,
            timeout_s=30, what="every partition to have an owner",
        )  # fmt: skip
        stack.start_relay()
        held = [e for n in range(5) for e in batch("held", n)]
        for n in range(5):
            assert server.request("POST", "/events", batch("held", n))[0] == 202
        wait_until(
            lambda: count(engine, "event_inbox WHERE published_at IS NULL") == 0,
            timeout_s=30,
            interval_s=0.05,
            what="relay",
        )
        thread = threading.Thread(target=producer)
        thread.start()
        time.sleep(1.0)

        private_pg.stop("fast")
        started = time.monotonic()
        status, _, _ = server.request("POST", "/events", batch("outage", 0), timeout=10)
        events_503_s = time.monotonic() - started
        identify_status = server.request("POST", "/identify", {"email": "o@async.test"})[0]
        # A producer that publishes straight to Redis meanwhile: the owners take its
        # messages, cannot apply them, and retry.
        direct = batch("direct", 0)
        settings = make_settings(
            private_pg.url, redis_url=Secret(stack.redis.url), identity_partitions=PARTITIONS
        )
        with Publisher(settings) as publisher:
            publisher.publish(direct)
        wait_until(
            lambda: "retrying in" in stack.logs(),
            timeout_s=60,
            interval_s=0.05,
            what="a worker to retry on the unavailable database",
        )
        time.sleep(1.0)
        private_pg.start()
        time.sleep(2.0)  # producers get through again by themselves
        stop.set()
        thread.join(timeout=60)
        wait_applied(engine, {str(e["eventId"]) for e in held + accepted + direct}, stack)

        assert status == 503 and events_503_s < 2.0
        assert identify_status == 503
        assert set(answers) <= {202, 503} and 503 in answers and answers[-1] == 202
        assert count(engine, "dead_letter") == 0, "an outage must not dead-letter events"
        with engine.connect() as conn:
            assert_consistent(conn, pairs(held + accepted + direct))
        print(
            f"\nPG restart (async): {len(held) + len(accepted)} events accepted, all applied;"
            f" {answers.count(503)} x 503 while down; 0 dead letters"
        )
    finally:
        stop.set()
        engine.dispose()


def test_redis_restart_leaves_identify_alone_and_the_event_path_recovers(
    private_pg: PrivatePostgres, redis_server: RedisServer, stack: AsyncStack, server: Server
) -> None:
    engine = create_engine(private_pg.url)
    try:
        stack.start_workers()
        stack.start_relay()
        before = batch("before", 0)
        assert server.request("POST", "/events", before)[0] == 202

        redis_server.stop()
        identify = [
            server.request("POST", "/identify", {"email": f"r{i}@async.test"}, timeout=10)
            for i in range(20)
        ]
        during = batch("during", 0)
        events_status = server.request("POST", "/events", during, timeout=10)[0]
        queues_status, _, queues_body = server.request("GET", "/queues", timeout=10)
        _, _, metrics = server.request("GET", "/metrics", timeout=10)
        redis_server.start()  # same port, empty: whatever it held is gone

        assert [s for s, _, _ in identify] == [200] * 20
        assert events_status == 202  # durably accepted in PostgreSQL; published later
        assert queues_status == 503 and json.loads(queues_body)["error"]
        assert 'identity_metrics_source_up{source="broker"} 0.0' in metrics.decode()
        assert (
            'identity_unavailable_responses_total{reason="broker",route="/queues"} 1.0'
            in server.request("GET", "/metrics")[2].decode()
        )
        wait_until(
            lambda: server.request("GET", "/queues")[0] == 200,
            timeout_s=30,
            interval_s=0.05,
            what="/queues back",
        )
        wait_applied(engine, {str(e["eventId"]) for e in before + during}, stack)
        with engine.connect() as conn:
            identified = [(f"r{i}@async.test", None) for i in range(20)]
            assert_consistent(conn, pairs(before + during) + identified)
    finally:
        engine.dispose()
