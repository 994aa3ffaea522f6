"""The asynchronous path end to end: POST /events and the Python publisher, through a
private Redis, the relay and one real Celery worker per partition, into real PostgreSQL,
while /identify traffic runs on the same database.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis as redis_client
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.events.messages import APPLY_EVENTS_TASK, partition_for, queue_name
from identity.settings import Settings
from tests.conftest import opened_app
from tests.support.async_stack import (
    AsyncStack,
    RedisServer,
    wait_applied,
    wait_until,
)
from tests.support.db import ROOT
from tests.support.invariants import Pair, assert_consistent
from tests.support.server import serve as serve_gunicorn
from worker.app import args_repr, create_celery
from worker.publisher import Publisher

pytestmark = pytest.mark.slow
PARTITIONS = 4


@pytest.fixture(scope="module")
def partitions() -> int:
    return PARTITIONS  # the stack, redis and pg fixtures are in tests/integration/conftest.py


@pytest.fixture
def queued_app(queued_settings: Settings, pg: Engine) -> Iterator[Flask]:
    with opened_app(queued_settings) as app:
        yield app


def test_many_events_across_partitions_with_concurrent_identify(
    stack: AsyncStack, pg: Engine, queued_settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(20261128)
    emails = [f"shopper{i}@mail.test" for i in range(1500)]
    phones = [f"555{i:05d}" for i in range(1500)]

    def pair() -> Pair:
        roll = rng.random()
        email = rng.choice(emails) if roll > 0.1 else None
        phone = rng.choice(phones) if roll < 0.9 else None
        return email, phone

    events = [{"eventId": f"big-{i}", "email": e, "phoneNumber": p} for i, (e, p) in
              enumerate(pair() for _ in range(6000))]  # fmt: skip
    requests = [pair() for _ in range(1500)]
    via_http, via_publisher = events[:4000], events[4000:]
    assert {partition_for(f"e:{e}", PARTITIONS) for e in emails} == set(range(PARTITIONS))

    # The production server (gunicorn) in its own processes, on the same database and Redis.
    env = stack.env(WEB_CONCURRENCY="2", LOG_LEVEL="WARNING")
    served = serve_gunicorn(env, ROOT, tmp_path / "gunicorn.log")
    with served as server, ThreadPoolExecutor(6) as pool, ThreadPoolExecutor(2) as pub:

        def identify(p: Pair) -> int:
            return server.request("POST", "/identify", {"email": p[0], "phoneNumber": p[1]})[0]

        def post(batch: list[dict[str, object]]) -> tuple[int, object]:
            return server.request_json("POST", "/events", batch)

        started = time.monotonic()
        sync = [pool.submit(identify, p) for p in requests]
        posts = [pub.submit(post, via_http[i : i + 250]) for i in range(0, len(via_http), 250)]
        with Publisher(queued_settings, events_per_message=200) as publisher:
            for i in range(0, len(via_publisher), 500):
                publisher.publish(via_publisher[i : i + 500])
        answers = [f.result(timeout=300) for f in posts]
        assert all(status == 202 for status, _ in answers), answers[:3]
        assert [i for _, body in answers for i in body["eventIds"]] == [  # type: ignore[index]
            e["eventId"] for e in via_http
        ]
        wait_applied(pg, {str(e["eventId"]) for e in events}, stack, timeout_s=300)
        elapsed = time.monotonic() - started
        sync_done_meanwhile = sum(f.done() for f in sync)
        statuses = [f.result(timeout=300) for f in sync]
        sync_s = time.monotonic() - started
        assert statuses == [200] * len(requests)

    rate = len(events) / elapsed
    print(f"\nasync: {len(events)} events applied in {elapsed:.1f}s = {rate:.0f} events/s end to"
          f" end ({PARTITIONS} partitions), meanwhile {sync_done_meanwhile} of {len(requests)}"
          f" /identify answered (all {len(requests)} in {sync_s:.1f}s)")  # fmt: skip
    accepted = [(e["email"], e["phoneNumber"]) for e in events] + requests
    with pg.connect() as conn:
        assert_consistent(conn, accepted)  # type: ignore[arg-type]
        assert conn.execute(text("SELECT count(*) FROM dead_letter")).scalar_one() == 0


def test_events_of_one_key_apply_in_publish_order(
    stack: AsyncStack, pg: Engine, queued_app: Flask, queued_settings: Settings
) -> None:
    """Per producer: successive POSTs (relayed in inbox order), and successive publishes."""
    keys = [f"order{k}@mail.test" for k in range(32)]
    by_http, by_publisher = keys[:16], keys[16:]

    def round_of(chosen: list[str], n: int) -> list[dict[str, object]]:
        # Each event brings a new phone to its key: its row id records when it was applied.
        return [{"email": key, "phoneNumber": f"9{keys.index(key):02d}{n:03d}"} for key in chosen]

    client = queued_app.test_client()
    ids: set[str] = set()
    with Publisher(queued_settings, events_per_message=5) as publisher:
        for n in range(8):  # both producers at once, round by round
            response = client.post("/events", json=round_of(by_http, n))
            assert response.status_code == 202
            ids.update(response.get_json()["eventIds"])
            ids.update(publisher.publish(round_of(by_publisher, n)))
    wait_applied(pg, ids, stack)
    with pg.connect() as conn:
        for k, key in enumerate(keys):
            phones = conn.execute(
                text("SELECT phone_number FROM contact WHERE email = :e ORDER BY id"), {"e": key}
            ).scalars()
            assert list(phones) == [f"9{k:02d}{n:03d}" for n in range(8)], key


def test_an_event_published_twice_applies_once(
    stack: AsyncStack, pg: Engine, queued_app: Flask, queued_settings: Settings
) -> None:
    client = queued_app.test_client()
    first = {"eventId": "twice-1", "email": "first@mail.test", "phoneNumber": "700001"}
    assert client.post("/events", json=first).status_code == 202
    wait_applied(pg, {"twice-1"}, stack)
    with pg.connect() as conn:
        applied_at = conn.execute(text("SELECT applied_at FROM processed_event")).scalar_one()
    # The same eventId again, through both entry points; the content differs so that a
    # second application would show.
    again = {"eventId": "twice-1", "email": "second@mail.test", "phoneNumber": "700002"}
    assert client.post("/events", json=[again, again]).status_code == 202
    with Publisher(queued_settings) as publisher:
        publisher.publish([again])
    marker = {"eventId": "after", "email": "first@mail.test", "phoneNumber": "700003"}
    with Publisher(queued_settings) as publisher:  # same partition as the repeats, after them
        publisher.publish([{**marker, "email": "second@mail.test"}])
    wait_applied(pg, {"after"}, stack)
    with pg.connect() as conn:
        rows = conn.execute(text("SELECT email, phone_number FROM contact ORDER BY id")).all()
        ledger = conn.execute(text("SELECT event_id, applied_at FROM processed_event")).all()
    assert [tuple(r) for r in rows] == [
        ("first@mail.test", "700001"),
        ("second@mail.test", "700003"),
    ]
    assert sorted(tuple(r) for r in ledger)[1] == ("twice-1", applied_at)


def test_queue_depths_and_dead_letters_are_visible(
    stack: AsyncStack, pg: Engine, queued_app: Flask
) -> None:
    client = queued_app.test_client()
    body = client.get("/queues").get_json()
    assert body["mode"] == "queued" and body["partitions"] == PARTITIONS
    assert [q["queue"] for q in body["queues"]] == [f"identity.p{p}" for p in range(PARTITIONS)]
    assert all(isinstance(q["depth"], int) and q["depth"] >= 0 for q in body["queues"])
    # Each partition's owner: the one worker process holding its lease (worker/ownership.py).
    pids = {p: stack.procs[f"worker{p}"].process.pid for p in range(PARTITIONS)}
    for queue in body["queues"]:
        assert f"/{pids[queue['partition']]}/" in queue["owner"], queue
        assert queue["leaseToken"] >= 1
    scrape = client.get("/metrics").get_data(as_text=True)
    for partition in range(PARTITIONS):
        assert f'identity_partition_owned{{partition="{partition}"}} 1.0' in scrape
    assert body["deadLetters"] == 0
    assert client.get("/dead-letters").get_json() == {"total": 0, "deadLetters": []}


def test_stream_bridge_takes_events_from_any_redis_client(
    stack: AsyncStack, pg: Engine, redis: RedisServer
) -> None:
    """A non-Python producer: plain XADD commands, no kombu, no Celery message format."""
    client = redis_client.Redis.from_url(redis.url)
    bridge = stack.spawn("bridge", [sys.executable, "-m", "worker.stream_bridge"])
    try:
        one = {"eventId": "s-1", "email": "stream@mail.test", "phoneNumber": "420001"}
        # One email a phone: 39 phones on one email would make it generic (guards).
        many = [{"eventId": f"s-{i}", "email": f"stream{i}@mail.test", "phoneNumber": f"42{i:04d}"}
                for i in range(2, 40)]  # fmt: skip
        client.execute_command("XADD", "identity:events", "*", "event", json.dumps(one))
        client.execute_command("XADD", "identity:events", "*", "events", json.dumps(many))
        bad = {"eventId": "s-bad", "email": "no-at-sign"}
        client.execute_command("XADD", "identity:events", "*", "event", json.dumps(bad))
        client.execute_command("XADD", "identity:events", "*", "event", "{not json")
        wait_applied(pg, {"s-1", *(str(e["eventId"]) for e in many)}, stack)
        with pg.connect() as conn:
            dead = dict(conn.execute(text("SELECT event_id, error FROM dead_letter")).all())
            phones = conn.execute(
                text(
                    "SELECT phone_number FROM contact WHERE email LIKE 'stream%@mail.test'"
                    " ORDER BY id"
                )
            ).scalars()
            # (distinct emails route to different partitions: the order across them is free)
            assert sorted(phones) == ["420001", *(str(e["phoneNumber"]) for e in many)]
        assert dead["s-bad"].startswith("invalid event: email")
        assert [e for e in dead if e.startswith("stream-")], dead  # the entry that is not JSON
        wait_until(
            lambda: client.xlen("identity:events") == 0, timeout_s=10, what="entries deleted"
        )
        assert bridge.process.poll() is None
    finally:
        stack.kill("bridge")
        client.close()


def test_worker_log_lines_are_json_with_no_email_or_phone_in_clear(
    stack: AsyncStack, pg: Engine, queued_settings: Settings
) -> None:
    """A Celery worker's lines go through the same formatter as the web's (identity.logs):
    a dead letter's line names the event, and an eventId a producer built from an email
    and a phone number is logged as keyed hashes, never in clear."""
    event_id = "order for marty@mail.test, call 5551234567"
    bad = {"eventId": event_id, "email": "no-at-sign", "phoneNumber": None}
    # A producer writing to the queue without validating (as in test_async_faults.py).
    celery = create_celery(queued_settings)
    try:
        celery.send_task(APPLY_EVENTS_TASK, args=[[bad]], queue=queue_name(0), **args_repr(1))
    finally:
        celery.close()

    def dead_letter() -> str | None:
        with pg.connect() as conn:
            query = text("SELECT error FROM dead_letter WHERE event_id = :e")
            return conn.execute(query, {"e": event_id}).scalar_one_or_none()

    # The line is written before the dead letter's row: once the row is there, so is it.
    wait_until(lambda: dead_letter() is not None, timeout_s=30, what="the dead letter")
    assert str(dead_letter()).startswith("invalid event: email")
    log = stack.procs["worker0"].log()
    assert "marty@mail.test" not in log and "5551234567" not in log
    line = next(x for x in log.splitlines() if "dead-lettering event" in x)
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "worker.tasks"
    assert "email#" in entry["message"] and "phone#" in entry["message"]
    # Celery's own lines (the worker's start) take the same path: JSON objects too.
    ready = next(x for x in log.splitlines() if " ready." in x)
    assert json.loads(ready)["logger"].startswith("celery")
