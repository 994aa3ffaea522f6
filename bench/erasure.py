"""Erasure timings on the largest seeded database (1,000,000 contacts by default).

- One value out of the 10,000-contact cluster (bench/seed.py's ``tenk``), as
  ``POST /erasures`` runs it (``identity.erasure.services.erase`` in one transaction):
  a leaf email (one contact loses it, the cluster stays one person: 10,000 members
  recomputed), then the hub phone that 5,000 of its contacts share (the cluster splits
  into the pieces that only that phone held together).
- An erasure list of 1,000 values (seeded persons' emails) through the operator CLI,
  ``python -m worker.erase FILE``: its own ``seconds`` over the lines, per erasure.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import seed
from bench.growth import make_engine
from identity.erasure.services import ErasureRequest, erase
from identity.storage.db import run_in_transaction

ROOT = Path(__file__).resolve().parents[1]
LIST_SIZE = int(os.environ.get("BENCH_ERASURE_LIST", "1000"))


def _timed_erase(engine: Any, request: ErasureRequest, cause: str) -> dict[str, Any]:
    started = time.perf_counter()
    result = run_in_transaction(
        engine, lambda conn: erase(conn, request, configured_key="", cause=cause)
    )
    return {
        "ms": (time.perf_counter() - started) * 1000,
        "contacts": result.contacts,
        "links": result.links,
        "persons_after": len(result.persons),
    }


def run(plan: seed.SeedPlan, people: int) -> dict[str, Any]:
    url = seed.fresh_copy(plan)
    out: dict[str, Any] = {"contacts": plan.contacts}
    engine = make_engine(url)
    try:
        if plan.growth:
            leaf = ErasureRequest(emails=frozenset({seed.growth_email("tenk", 1)}))
            out["tenk_leaf_email"] = _timed_erase(engine, leaf, "bench-erase-leaf")
            hub = ErasureRequest(phones=frozenset({seed.growth_phone("tenk")}))
            out["tenk_hub_phone"] = _timed_erase(engine, hub, "bench-erase-hub")
    finally:
        engine.dispose()
    rng = random.Random(20261130)
    persons = rng.sample(range(10, people), min(LIST_SIZE, people - 10))
    with tempfile.TemporaryDirectory(prefix="bench-erase-") as workdir:
        path = Path(workdir) / "erase.txt"
        path.write_text("".join(f"email:{seed.person_email(p)}\n" for p in persons))
        env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "worker.erase", str(path)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"worker.erase failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    totals = json.loads(done.stdout)
    out["list"] = {
        "values": len(persons),
        "seconds": totals["seconds"],
        "wall_seconds": wall,
        "ms_per_erasure": totals["seconds"] * 1000 / len(persons),
        "contacts": totals["contacts"],
        "links": totals["links"],
    }
    seed.drop(plan.database)
    return out
