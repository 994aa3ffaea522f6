"""The measured inputs of docs/SCALING.md: ``python -m bench.capacity`` (a minute or two).

On a private PostgreSQL instance with production durability (fsync, synchronous commit,
full page writes: tests.support.processes), one process, one connection, so that the CPU
of each side and the WAL written can be read exactly:

- /identify through the real Flask app (test client: no HTTP server) with the sync
  benchmark's write mix (bench/mix.py): wall time, this process's CPU and the PostgreSQL
  backend's CPU (from /proc) per request;
- events accepted by ``POST /events`` in batches of 500 (the inbox insert), claimed and
  marked published by the relay's SQL (without Redis), then applied by ``apply_events``
  in batches of 500 as a partition worker does (without Celery): the same figures per
  event for each step;
- the same events again under new ids (repeat customers: nothing new but the ledger);
- the WAL each step writes (``pg_current_wal_lsn()`` before and after), per request or
  event: what a replica must replay and the primary must write;
- bytes per row of every table that grows (``pg_total_relation_size``: heap, indexes and
  TOAST, after VACUUM), over the rows both phases wrote.

CPU time, not wall time, is what the capacity model divides by: it does not depend on
what else the shared 2-core machine runs. Prints a JSON object.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from api import create_app
from bench.mix import MIX
from identity.events.services import MAX_EVENTS_PER_TRANSACTION, apply_events, chunked
from identity.guards.policy import GuardPolicy
from identity.settings import Secret, Settings
from identity.storage.db import run_in_transaction
from tests.support.db import migrate
from tests.support.processes import PrivatePostgres

REQUESTS = int(os.environ.get("CAPACITY_REQUESTS", "4000"))
EVENTS = int(os.environ.get("CAPACITY_EVENTS", "40000"))
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
TABLES = ("contact", "link", "change", "change_subject", "processed_event", "event_inbox")


def backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime + stime


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def wal_lsn(engine: Engine) -> int:
    with engine.connect() as conn:
        sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"
        return int(conn.execute(text(sql)).scalar_one())


class Meter:
    """Wall time, this process's CPU, the backend's CPU and the WAL written, over a block."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pid = backend_pid(engine)

    def __enter__(self) -> Meter:
        self.wall, self.cpu = time.monotonic(), time.process_time()
        self.pg = backend_cpu_s(self.pid)
        self.wal = wal_lsn(self.engine)
        return self

    def __exit__(self, *_: Any) -> None:
        self.wall = time.monotonic() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.pg = backend_cpu_s(self.pid) - self.pg
        self.wal = wal_lsn(self.engine) - self.wal

    def per(self, n: int) -> dict[str, float]:
        return {
            "count": n,
            "wall_ms": round(1000 * self.wall / n, 3),
            "python_cpu_ms": round(1000 * self.cpu / n, 3),
            "postgres_cpu_ms": round(1000 * self.pg / n, 3),
            "wal_bytes": round(self.wal / n, 1),
            "per_s_wall": round(n / self.wall, 1),
        }


def identify_mix(url: str, rng: random.Random) -> dict[str, float]:
    settings = Settings(database_url=Secret(url), db_pool_size=1, db_max_overflow=0)
    app = create_app(settings)
    client = app.test_client()
    persons = 2000
    for p in range(persons):  # the people the mix looks up
        client.post("/identify", json={"email": f"p{p}@cap.test", "phoneNumber": f"5{p:07d}"})
    kinds = [k for k, w in MIX.items() for _ in range(w)]
    new = 0
    engine = app.extensions["identity.engine"]
    with Meter(engine) as meter:
        for _ in range(REQUESTS):
            kind, p, q = rng.choice(kinds), rng.randrange(persons), rng.randrange(persons)
            new += 1
            body: dict[str, str] = {
                "lookup": {"email": f"p{p}@cap.test", "phoneNumber": f"5{p:07d}"},
                "hot": {"email": f"p{p % 10}@cap.test", "phoneNumber": f"5{p % 10:07d}"},
                "secondary": {"email": f"p{p}@cap.test", "phoneNumber": f"6{new:07d}"},
                "person": {"email": f"n{new}@cap.test", "phoneNumber": f"7{new:07d}"},
                "merge": {"email": f"p{p}@cap.test", "phoneNumber": f"5{q:07d}"},
            }[kind]
            assert client.post("/identify", json=body).status_code == 200
    engine.dispose()
    return meter.per(REQUESTS)


def checkout_events(rng: random.Random) -> list[dict[str, str]]:
    """Events as checkout produces them: half new people, a quarter repeat buyers with a
    new phone, a fifth the same pair again, a few merges."""
    events = []
    for i in range(EVENTS):
        roll = rng.random()
        p = rng.randrange(max(1, i // 2))
        if roll < 0.5:
            email, phone = f"e{i}@cap.test", f"8{i:08d}"
        elif roll < 0.75:
            email, phone = f"e{p}@cap.test", f"9{i:08d}"
        elif roll < 0.97:
            email, phone = f"e{p}@cap.test", f"8{p:08d}"
        else:
            email, phone = f"e{p}@cap.test", f"8{rng.randrange(max(1, i)):08d}"
        events.append({"eventId": f"cap-{i}", "email": email, "phoneNumber": phone})
    return events


def events_path(url: str, rng: random.Random) -> dict[str, dict[str, float]]:
    """Accept (POST /events), relay (claim and mark published), apply: per event."""
    from identity.events.messages import parse_event
    from identity.events.services import claim_unpublished, mark_published
    from identity.storage.db import create_db_engine

    settings = Settings(
        database_url=Secret(url),
        redis_url=Secret("redis://127.0.0.1:1/0"),  # queued mode; Redis is never called
        db_pool_size=1,
        db_max_overflow=0,
    )
    raw = checkout_events(rng)
    app = create_app(settings)
    client = app.test_client()
    with Meter(app.extensions["identity.engine"]) as accept:
        for chunk in chunked(raw, MAX_EVENTS_PER_TRANSACTION):
            assert client.post("/events", json=list(chunk)).status_code == 202
    app.extensions["identity.engine"].dispose()

    engine = create_db_engine(settings, pool_size=1, max_overflow=0)
    claimed = 0
    with Meter(engine) as relay:
        while True:

            def claim(conn: Any) -> int:
                rows = claim_unpublished(conn, limit=5000)
                mark_published(conn, [r.seq for r in rows])
                return len(rows)

            got = run_in_transaction(engine, claim)
            claimed += got
            if not got:
                break
    assert claimed == len(raw)
    policy = GuardPolicy.from_settings(settings)
    events = [parse_event(e, None, internal=True) for e in raw]
    with Meter(engine) as apply:
        for chunk in chunked(events, MAX_EVENTS_PER_TRANSACTION):
            run_in_transaction(engine, lambda conn, c=chunk: apply_events(conn, c, policy))
    # The same pairs again under new ids: repeat customers, rule 4 (the ledger row only).
    repeats = [replace(e, event_id="again-" + e.event_id) for e in events]
    with Meter(engine) as again:
        for chunk in chunked(repeats, MAX_EVENTS_PER_TRANSACTION):
            run_in_transaction(engine, lambda conn, c=chunk: apply_events(conn, c, policy))
    engine.dispose()
    return {
        "accept": accept.per(len(raw)),
        "relay": relay.per(len(raw)),
        "apply": apply.per(len(raw)),
        "apply_repeats": again.per(len(repeats)),
    }


def bytes_per_row(url: str) -> dict[str, dict[str, float]]:
    from sqlalchemy import create_engine

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    sizes = {}
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
        for table in TABLES:
            rows = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            total = int(
                conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": table}).scalar_one()
            )
            heap = int(conn.execute(text("SELECT pg_relation_size(:t)"), {"t": table}).scalar_one())
            sizes[table] = {
                "rows": rows,
                "total_bytes": total,
                "bytes_per_row": round(total / rows, 1) if rows else 0.0,
                "heap_bytes_per_row": round(heap / rows, 1) if rows else 0.0,
            }
    engine.dispose()
    return sizes


def main() -> None:
    rng = random.Random(13)
    pg = PrivatePostgres(durable=True).init()
    try:
        pg.start()
        migrate(pg.url)
        result = {
            "identify": identify_mix(pg.url, rng),
            "events": events_path(pg.url, rng),
            "bytes": bytes_per_row(pg.url),
        }
    finally:
        pg.destroy()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
