"""Async path: publish events to Redis, time until every one is applied by the workers.

Real processes: a private redis-server, one Celery worker per partition
(``python -m worker.partition N``, as `make run` starts them), the Python publisher
(``worker.publisher``). The clock starts before the first publish and stops when the
ledger (``processed_event``) holds every event; each run works on a fresh copy of the
largest seeded database, so the events meet a realistic table.

The ceiling, in the same run: the same set-based SQL (``event_services.apply_events``,
batches of 500, the partitions' event lists) called directly from as many threads as
there are partitions, with no broker, no Celery and no JSON: what the database and the
batch planner alone sustain. Ratio = ours / ceiling.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import seed
from bench.growth import make_engine
from identity.events.messages import Event, split_by_partition
from identity.events.services import MAX_EVENTS_PER_TRANSACTION, apply_events, chunked
from identity.normalize import Identifiers
from identity.settings import Secret, Settings
from identity.storage.db import run_in_transaction
from tests.support.async_stack import AsyncStack, running_redis, wait_until
from worker.publisher import Publisher

#: At least 100,000 by default; BENCH_EVENTS for shorter development runs.
EVENTS = int(os.environ.get("BENCH_EVENTS", "100000"))


def make_events(people: int, count: int, tag: str) -> list[Event]:
    """The sync mix as events: known identifiers, new secondaries, new persons, merges."""
    rng = random.Random(tag)
    events = []
    for i in range(count):
        kind = rng.choices(("lookup", "secondary", "person", "merge"), (73, 12, 12, 3))[0]
        p = rng.randrange(10, people)
        if kind == "lookup":
            ids = Identifiers(seed.person_email(p), seed.person_phone(p))
        elif kind == "secondary":
            ids = Identifiers(seed.person_email(p), f"4{i:09d}")
        elif kind == "person":
            ids = Identifiers(f"ev{i}@{tag}.test", f"3{i:09d}")
        else:
            ids = Identifiers(seed.person_email(p), seed.person_phone(rng.randrange(10, people)))
        events.append(Event(event_id=f"{tag}:{i}", identifiers=ids))
    return events


def applied(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM processed_event")).scalar_one())
    finally:
        engine.dispose()


def end_to_end(plan: seed.SeedPlan, people: int, partitions: int, tag: str) -> dict[str, float]:
    """Workers up, then publish every event and wait for the ledger to hold them all."""
    url = seed.fresh_copy(plan)
    events = make_events(people, EVENTS, tag)
    with (
        tempfile.TemporaryDirectory(prefix="bench-async-") as workdir,
        running_redis(Path(workdir)) as redis,
    ):
        stack = AsyncStack(
            database_url=url,
            redis=redis,
            partitions=partitions,
            workdir=Path(workdir),
        )
        settings = Settings(
            database_url=Secret(url), redis_url=Secret(redis.url), identity_partitions=partitions
        )
        try:
            stack.start_workers()
            with Publisher(settings) as publisher:
                started = time.perf_counter()
                publisher.publish_events(events)
                published = time.perf_counter() - started
                engine = make_engine(url)
                # Each partition applies its events in publish order, so its last event in
                # the ledger means the partition is done: the clock polls those few ids
                # (an index lookup), not count(*) over a ledger growing to 100,000 rows
                # (~15 ms of PostgreSQL CPU ten times a second, taken from the workers).
                # The full count then confirms that every event is there.
                last_ids = sorted(
                    group[-1].event_id for group in split_by_partition(events, partitions).values()
                )
                try:

                    def done() -> bool:
                        with engine.connect() as conn:
                            seen = conn.execute(
                                text(
                                    "SELECT count(*) FROM processed_event"
                                    " WHERE event_id = ANY(:ids)"
                                ),
                                {"ids": last_ids},
                            ).scalar_one()
                            if seen < len(last_ids):
                                return False
                            total = conn.execute(
                                text("SELECT count(*) FROM processed_event")
                            ).scalar_one()
                            return int(total) >= EVENTS

                    wait_until(done, timeout_s=900, interval_s=0.1, what="every event applied")
                    elapsed = time.perf_counter() - started
                finally:
                    engine.dispose()
        finally:
            stack.close()
    return {"seconds": elapsed, "publish_seconds": published, "events_per_s": EVENTS / elapsed}


def ceiling(plan: seed.SeedPlan, people: int, partitions: int, tag: str) -> dict[str, float]:
    """apply_events called directly, one thread per partition, batches of 500."""
    url = seed.fresh_copy(plan)
    events = make_events(people, EVENTS, tag)
    groups = split_by_partition(events, partitions)
    engine = make_engine(url)
    errors: list[BaseException] = []

    def drain(group: list[Event]) -> None:
        try:
            for chunk in chunked(group, MAX_EVENTS_PER_TRANSACTION):
                run_in_transaction(engine, lambda conn, c=chunk: apply_events(conn, c))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(g,)) for g in groups.values()]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    engine.dispose()
    if errors:
        raise errors[0]
    assert applied(url) == EVENTS
    return {"seconds": elapsed, "events_per_s": EVENTS / elapsed}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(*, runs: int, log: Callable[[str], None], plan: seed.SeedPlan) -> dict[str, Any]:
    people = seed.people_count(plan)
    out: dict[str, Any] = {"events": EVENTS, "contacts": plan.contacts, "partitions": {}}
    for partitions in (1, 2):
        ours, theirs = [], []
        for r in range(runs):
            tag = f"a{partitions}r{r}"
            ours.append(end_to_end(plan, people, partitions, tag))
            theirs.append(ceiling(plan, people, partitions, tag))
            log(
                f"  async p={partitions} run {r + 1}: {ours[-1]['events_per_s']:,.0f} events/s"
                f" (published in {ours[-1]['publish_seconds']:.1f} s);"
                f" direct {theirs[-1]['events_per_s']:,.0f} events/s"
            )
        out["partitions"][str(partitions)] = {
            "events_per_s": spread([o["events_per_s"] for o in ours]),
            "publish_s": spread([o["publish_seconds"] for o in ours]),
            "ceiling_per_s": spread([t["events_per_s"] for t in theirs]),
            "ratio": spread(
                [o["events_per_s"] / t["events_per_s"] for o, t in zip(ours, theirs, strict=True)]
            ),
        }
    seed.drop(plan.database)
    return out
