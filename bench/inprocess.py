"""/identify in-process, one thread: CPU per request of the app and of its PostgreSQL backend.

The served figures of ``make bench`` (wrk against granian) carry the whole machine's noise;
this calls the WSGI app directly with the bench's mix on a fresh copy of the 10k database
and reads ``time.process_time`` and the backend's CPU from ``/proc``, so two trees or two
settings can be compared within a few percent. Used to tune the hot path (issue 12).

    python -m bench.inprocess [--requests N] [--kinds lookup,hot,...] [--profile]

The kinds are bench/mix.py's. ``--profile`` prints cProfile's top functions (CPU time),
whose absolute figures are inflated several times by the profiler itself.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from typing import Any

from bench import seed, sync
from bench.mix import MIX
from bench.run import SIZES


def bodies(people: int, count: int, kinds: set[str], rng: random.Random) -> list[bytes]:
    """Request bodies drawn as bench/identify.lua draws them, keeping only ``kinds``."""
    out: list[bytes] = []
    names, weights = list(MIX), list(MIX.values())
    for i in range(count):
        kind = rng.choices(names, weights)[0]
        p, q = rng.randrange(10, people), rng.randrange(10, people)
        email, phone = seed.person_email(p), seed.person_phone(p)
        if kind == "lookup":
            pick = rng.randrange(3)
            body: dict[str, str] = (
                {"email": email}
                if pick == 0
                else {"phoneNumber": phone}
                if pick == 1
                else {"email": email, "phoneNumber": phone}
            )
        elif kind == "hot":
            h = rng.randrange(10)
            body = {"email": seed.person_email(h), "phoneNumber": seed.person_phone(h)}
        elif kind == "secondary":
            body = {"email": email, "phoneNumber": f"5{i:09d}"}
        elif kind == "person":
            body = {"email": f"n{i}@inprocess.test", "phoneNumber": f"6{i:09d}"}
        else:
            body = {"email": email, "phoneNumber": seed.person_phone(q)}
        if kind in kinds:
            out.append(json.dumps(body).encode())
    return out


def environ(body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/identify",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=6000, help="drawn before the filter")
    parser.add_argument("--kinds", default=",".join(MIX))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    plan = seed.SeedPlan("10k", SIZES["10k"], growth=False)
    seed.seed_template(plan, log=lambda _: None)
    people = seed.people_count(plan)
    os.environ["DATABASE_URL"] = seed.fresh_copy(plan)
    from api import create_app

    app = create_app()
    statuses: dict[str, int] = {}

    def start_response(status: str, _headers: Any, _exc: Any = None) -> None:
        statuses[status[:3]] = statuses.get(status[:3], 0) + 1

    rng = random.Random(7)
    for body in bodies(people, 300, set(MIX), rng):  # warm-up: every statement prepared
        b"".join(app(environ(body), start_response))
    work = bodies(people, args.requests, set(args.kinds.split(",")), rng)
    statuses.clear()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    pg_before = sync.cpu_seconds(None, plan.database)["postgres"]
    cpu, wall = time.process_time(), time.perf_counter()
    for body in work:
        b"".join(app(environ(body), start_response))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg = sync.cpu_seconds(None, plan.database)["postgres"] - pg_before
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
    n = len(work)
    print(
        f"{args.kinds}: {n} requests, app CPU {cpu * 1000 / n:.3f} ms/request,"
        f" PostgreSQL CPU {pg * 1000 / n:.3f} ms/request, wall {wall * 1000 / n:.3f} ms;"
        f" statuses {statuses}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
