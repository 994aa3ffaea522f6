"""apply_events called directly, one thread per partition, batches of 500: events/s.

A script rather than a function so that it runs against either tree: bench/compare.py
runs it with this tree's code and with the commit before the graph work (its own
``PYTHONPATH``), on databases seeded alike, and compares. It uses only what both trees
have (``apply_events``, ``chunked``, ``Event``, ``split_by_partition``, the engine
factory), from wherever each tree keeps them: the grouped layout (``identity.events``
package, ``identity.storage``) or the flat one of the older trees. Prints one JSON line.

    python bench/events_direct.py DATABASE_URL PEOPLE EVENTS PARTITIONS TAG
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time


def make_events(people: int, count: int, tag: str) -> list[object]:
    """bench/async_bench.make_events, restated (the keys of bench/seed.py)."""
    try:
        from identity.events.messages import Event
    except ImportError:  # an older tree: identity/events.py
        from identity.events import Event  # type: ignore[attr-defined,no-redef]
    from identity.normalize import Identifiers

    rng = random.Random(tag)
    events = []
    for i in range(count):
        kind = rng.choices(("lookup", "secondary", "person", "merge"), (73, 12, 12, 3))[0]
        p = rng.randrange(10, people)
        email, phone = f"u{p}@seed.test", f"9{p:010d}"
        if kind == "lookup":
            ids = Identifiers(email, phone)
        elif kind == "secondary":
            ids = Identifiers(email, f"4{i:09d}")
        elif kind == "person":
            ids = Identifiers(f"ev{i}@{tag}.test", f"3{i:09d}")
        else:
            ids = Identifiers(email, f"9{rng.randrange(10, people):010d}")
        events.append(Event(event_id=f"{tag}:{i}", identifiers=ids))
    return events


def main() -> int:
    from identity.settings import Secret, Settings

    try:  # the grouped layout
        from identity.events.messages import split_by_partition
        from identity.events.services import apply_events, chunked
        from identity.storage.db import create_db_engine, run_in_transaction
    except ImportError:  # an older tree's flat modules
        from identity.db import create_db_engine, run_in_transaction  # type: ignore[no-redef]
        from identity.event_services import apply_events, chunked  # type: ignore[no-redef]

        from identity.events import split_by_partition  # type: ignore[attr-defined,no-redef]

    url, people, count, partitions, tag = sys.argv[1:6]
    events = make_events(int(people), int(count), tag)
    groups = split_by_partition(events, int(partitions))  # type: ignore[arg-type]
    engine = create_db_engine(Settings(database_url=Secret(url)))
    errors: list[BaseException] = []
    cpu_before = time.process_time()

    def drain(group: list[object]) -> None:
        try:
            for chunk in chunked(group, 500):
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
    cpu = time.process_time() - cpu_before
    engine.dispose()
    if errors:
        raise errors[0]
    batches = -(-int(count) // 500)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "events_per_s": int(count) / elapsed,
                "python_cpu_ms_per_batch": cpu * 1000 / batches,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
