"""Faults on the asynchronous path, with real processes: a worker SIGKILLed mid-batch,
Redis restarted between accept and apply, Redis down at accept, poison events, Flower.

One partition, so that the order of application is the publish order and the exact
expected rows can be computed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.graph import services
from identity.graph.batch import plan_batch
from identity.graph.reconcile import Row
from identity.normalize import Identifiers
from identity.settings import Settings
from identity.storage.db import run_in_transaction
from tests.conftest import opened_app
from tests.support.async_stack import (
    AsyncStack,
    RedisServer,
    free_port,
    wait_applied,
    wait_until,
)
from tests.support.db import ROOT
from tests.support.invariants import assert_consistent, check_invariants
from worker.app import create_celery
from worker.publisher import Publisher

pytestmark = pytest.mark.slow


# The stack (one partition), redis, queued_settings and pg fixtures: tests/integration/conftest.py


@pytest.fixture
def client(queued_settings: Settings, pg: Engine) -> Iterator[object]:
    with opened_app(queued_settings) as app:
        yield app.test_client()


def scalar(engine: Engine, sql: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


@contextmanager
def root_held(pg: Engine, holder: Identifiers) -> Iterator[None]:
    """Store ``holder``, then hold its cluster's root FOR UPDATE for the block: a worker's
    transaction stops on it mid-batch, after its identifier locks and ledger rows, before
    its writes."""
    run_in_transaction(pg, lambda conn: services.identify(conn, identifiers=holder))
    with pg.connect() as blocker:
        sql = "SELECT id FROM contact WHERE email = :email FOR UPDATE"
        blocker.execute(text(sql), {"email": holder.email})
        yield
        blocker.rollback()


def wait_for_worker_blocked_on_root(pg: Engine) -> None:
    """Until a worker's batch waits on a root row lock (held by the test) mid-transaction.

    By the wait itself (a row lock waits on the holder's transaction), not the statement's
    text: the batch's root lock is a prepared statement, sent as ``EXECUTE``."""
    wait_until(
        lambda: scalar(
            pg,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND wait_event IN ('transactionid', 'tuple')",
        ),
        timeout_s=30,
        what="the worker to wait on the held root inside its batch",
    )


def pairs_of(events: list[dict[str, object]]) -> list[tuple[str | None, str | None]]:
    return [(e.get("email"), e.get("phoneNumber")) for e in events]  # type: ignore[misc]


def contact_pairs(engine: Engine) -> list[tuple[object, object]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT email, phone_number FROM contact ORDER BY id")).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def some_events(prefix: str, count: int) -> list[dict[str, object]]:
    """Overlapping keys: many merges and secondaries inside one batch."""
    return [
        {"eventId": f"{prefix}-{i}", "email": f"{prefix}{i % 37}@mail.test",
         "phoneNumber": f"6{(i * 7) % 53:05d}"}
        for i in range(count)
    ]  # fmt: skip


def test_worker_sigkilled_mid_batch_loses_nothing_and_doubles_nothing(
    stack: AsyncStack, pg: Engine, client: object
) -> None:
    holder = Identifiers("hold@mail.test", "800000")
    events = [{"eventId": "kill-hold", "email": "hold@mail.test", "phoneNumber": "800001"}]
    events += some_events("kill", 300)
    with root_held(pg, holder):
        response = client.post("/events", json=events)  # type: ignore[attr-defined]
        assert response.status_code == 202
        wait_for_worker_blocked_on_root(pg)
        stack.kill("worker0")  # SIGKILL, the worker and its pool process
    assert scalar(pg, "SELECT count(*) FROM processed_event") == 0  # the batch never committed

    stack.start_worker(0)
    wait_applied(pg, {str(e["eventId"]) for e in events}, stack)

    # Exactly the rows of applying the events once, in order, after the holder's row.
    now = datetime.now(UTC)
    hold_row = Row(1, holder.email, holder.phone, None, now)
    plan = plan_batch(
        [Identifiers(e["email"], e["phoneNumber"]) for e in events],  # type: ignore[arg-type]
        [hold_row],
        [hold_row],
        now,
    )
    expected = [(holder.email, holder.phone)] + [(n.email, n.phone) for n in plan.new_rows]
    assert contact_pairs(pg) == expected
    with pg.connect() as conn:
        assert_consistent(conn, [(holder.email, holder.phone), *pairs_of(events)])


def pool_children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_pool_child_killed_mid_batch_is_redelivered_by_reject_on_worker_lost(
    stack: AsyncStack, pg: Engine, queued_settings: Settings
) -> None:
    """Published straight to Redis (no inbox, so no re-drive): only the broker redelivers."""
    holder = Identifiers("held@mail.test", "810000")
    events = [{"eventId": "lost-held", "email": "held@mail.test", "phoneNumber": "810001"}]
    events += some_events("lost", 200)
    worker = stack.procs["worker0"].process
    [child] = wait_until(lambda: pool_children(worker.pid), timeout_s=30, what="the pool child")
    with root_held(pg, holder):
        with Publisher(queued_settings) as publisher:
            publisher.publish(events)
        wait_for_worker_blocked_on_root(pg)
        os.kill(child, signal.SIGKILL)
    wait_applied(pg, {str(e["eventId"]) for e in events}, stack)
    assert worker.poll() is None  # the main process stayed up and replaced its child
    with pg.connect() as conn:
        assert_consistent(conn, [(holder.email, holder.phone), *pairs_of(events)])
        assert conn.execute(text("SELECT count(*) FROM processed_event")).scalar_one() == len(
            events
        )


def test_redis_restarted_between_accept_and_apply_loses_nothing(
    stack: AsyncStack, pg: Engine, client: object, redis: RedisServer
) -> None:
    stack.kill("worker0")  # nothing applies while Redis holds the messages
    events = some_events("restart", 200)
    assert client.post("/events", json=events[:100]).status_code == 202  # type: ignore[attr-defined]
    assert client.post("/events", json=events[100:]).status_code == 202  # type: ignore[attr-defined]
    wait_until(
        lambda: scalar(pg, "SELECT count(*) FROM event_inbox WHERE published_at IS NULL") == 0,
        timeout_s=30,
        what="the relay to publish the accepted events",
    )
    redis.restart()  # no persistence: the queued messages are gone
    stack.start_worker(0)
    wait_applied(pg, {str(e["eventId"]) for e in events}, stack)
    with pg.connect() as conn:
        assert_consistent(conn, pairs_of(events))


def test_events_accepted_while_redis_is_down_are_applied_when_it_returns(
    stack: AsyncStack, pg: Engine, client: object, redis: RedisServer
) -> None:
    redis.stop()
    try:
        events = some_events("down", 50)
        response = client.post("/events", json=events)  # type: ignore[attr-defined]
        assert response.status_code == 202  # durably accepted by PostgreSQL alone
        assert response.get_json()["status"] == "queued"
        assert client.get("/queues").status_code == 503  # type: ignore[attr-defined]
    finally:
        redis.start()
    wait_applied(pg, {str(e["eventId"]) for e in events}, stack)
    with pg.connect() as conn:
        assert_consistent(conn, pairs_of(events))


@pytest.fixture
def poison_trigger(pg: Engine) -> Iterator[str]:
    """A real database failure for one email: its insert raises."""
    with pg.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.email = 'poison@mail.test' THEN"
                " RAISE EXCEPTION 'poisoned row for %', NEW.email; END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER test_poison BEFORE INSERT ON contact"
                " FOR EACH ROW EXECUTE FUNCTION test_poison()"
            )
        )
    try:
        yield "poison@mail.test"
    finally:
        drop_poison_trigger(pg)


def drop_poison_trigger(pg: Engine) -> None:
    with pg.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS test_poison ON contact"))
        conn.execute(text("DROP FUNCTION IF EXISTS test_poison()"))


def test_poison_events_are_dead_lettered_and_the_partition_keeps_flowing(
    stack: AsyncStack,
    pg: Engine,
    client: object,
    queued_settings: Settings,
    poison_trigger: str,
) -> None:
    batch = [
        {"eventId": "good-1", "email": "good1@mail.test", "phoneNumber": "510001"},
        {"eventId": "poison-1", "email": poison_trigger, "phoneNumber": "510002"},
        {"eventId": "good-2", "email": "good2@mail.test", "phoneNumber": "510001"},
    ]
    assert client.post("/events", json=batch).status_code == 202  # type: ignore[attr-defined]
    # A producer writing to the queue without validating: a malformed item in a message.
    celery = create_celery(queued_settings)
    try:
        raw = [
            {"eventId": "raw-bad", "email": "not an email"},
            {"eventId": "raw-good", "email": "raw@mail.test"},
        ]
        celery.send_task("identity.apply_events", args=[raw], queue="identity.p0")
    finally:
        celery.close()
    later = {"eventId": "good-3", "email": "good3@mail.test"}
    assert client.post("/events", json=later).status_code == 202  # type: ignore[attr-defined]

    wait_applied(pg, {"good-1", "good-2", "good-3", "raw-good"}, stack)
    letters = {
        d["eventId"]: d
        for d in client.get("/dead-letters").get_json()["deadLetters"]  # type: ignore[attr-defined]
    }
    assert set(letters) == {"poison-1", "raw-bad"}
    assert "poisoned row for poison@mail.test" in letters["poison-1"]["error"]
    assert letters["poison-1"]["payload"]["email"] == poison_trigger
    assert letters["raw-bad"]["error"].startswith("invalid event: email must look like")
    assert scalar(pg, "SELECT count(*) FROM processed_event WHERE event_id = 'poison-1'") == 0

    # Fixed (the trigger goes), then replayed by the CLI: applied, and no longer dead.
    drop_poison_trigger(pg)
    env = stack.env()
    replay = subprocess.run(
        [sys.executable, "-m", "worker.deadletters", "replay", "poison-1", "raw-bad"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    outcome = json.loads(replay.stdout)
    assert outcome == {"replayed": ["poison-1"], "stillInvalid": ["raw-bad"], "mode": "queued"}
    wait_applied(pg, {"poison-1"}, stack)
    listing = subprocess.run(
        [sys.executable, "-m", "worker.deadletters", "list"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert [d["eventId"] for d in json.loads(listing.stdout)["deadLetters"]] == ["raw-bad"]
    with pg.connect() as conn:
        assert not check_invariants(conn)
        held = set(conn.execute(text("SELECT email FROM contact")).scalars())
    assert {"good1@mail.test", "good2@mail.test", "good3@mail.test", "raw@mail.test"} <= held
    assert poison_trigger in held


def _get(url: str, auth: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def test_flower_requires_auth_and_lists_the_partition_workers(
    stack: AsyncStack, queued_settings: Settings, pg: Engine
) -> None:
    port = free_port()
    flower = [sys.executable, "-m", "celery", "-A", "worker", "flower", "--conf=flowerconfig.py"]
    refused = subprocess.run(
        flower, cwd=ROOT, env=stack.env(FLOWER_PORT=str(port), FLOWER_BASIC_AUTH=""),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "FLOWER_BASIC_AUTH is not set" in refused.stderr + refused.stdout

    stack.spawn("flower", flower, stack.env(FLOWER_PORT=str(port), FLOWER_BASIC_AUTH="ops:s3cret"))
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _get(base + "/healthcheck", None)[0] == 200, timeout_s=30, what="Flower")
    assert _get(base + "/api/workers", None)[0] == 401
    assert _get(base + "/api/workers", "ops:wrong")[0] == 401

    def workers() -> list[str]:
        status, body = _get(base + "/api/workers?refresh=1", "ops:s3cret")
        return [name for name in json.loads(body)] if status == 200 else []

    names = wait_until(workers, timeout_s=60, interval_s=1, what="Flower to list the workers")
    assert any(name.startswith("p0@") for name in names), names
    assert _get(base + "/", "ops:s3cret")[0] == 200

    # What Flower shows of a task: its arguments as a count, never an email or a phone.
    events = [
        {"eventId": f"flower-{i}", "email": f"shown{i}@flower.test", "phoneNumber": f"7770{i}"}
        for i in range(7)
    ]
    with Publisher(queued_settings) as publisher:
        publisher.publish(events)
    wait_applied(pg, {str(e["eventId"]) for e in events}, stack)

    def tasks() -> list[dict[str, object]]:
        status, body = _get(base + "/api/tasks", "ops:s3cret")
        listed = list(json.loads(body).values()) if status == 200 else []
        ours = [
            t for t in listed if t.get("args") == "[<7 events>]" and t.get("state") == "SUCCESS"
        ]
        return listed if ours else []

    listed = wait_until(tasks, timeout_s=60, interval_s=0.5, what="Flower to show the task")
    assert all(re.fullmatch(r"\[<\d+ events>\]", str(t.get("args"))) for t in listed), listed
    shown = json.dumps(listed)
    for event in events:
        assert str(event["email"]) not in shown and str(event["phoneNumber"]) not in shown
