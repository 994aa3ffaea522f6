"""`make bench`: seed, measure the sync path, its pgbench ceiling, async, growth; report.

Environment (all optional):

- ``BENCH_SIZES``: comma list of table sizes, default ``10k,1m`` (``10m`` on request);
- ``BENCH_CLIENTS``: wrk/pgbench concurrency levels, default ``1,8,32,64,256``;
- ``BENCH_RUNS``: runs per point (medians reported with min..max), default 3;
- ``BENCH_SECONDS``: seconds per run, default 10 (plus a 2 s warm-up);
- ``BENCH_PARTS``: any of ``sync,compare,growth,async,erasure``, default all;
- ``BENCH_SYNC_SIZES``: the sizes the sync tables are measured at, default all of them;
- ``BENCH_CEILINGS``: the pgbench ceilings beside each wrk run (bench/ceiling.py), default
  ``ours,minimal,minimal_prepared``;
- ``BENCH_COMPARE_CLIENTS``: the concurrency of the side-by-side comparison
  (bench/compare.py: servers, guards off, the commit before the graph work), default 32;
- ``BENCH_SERVER``: the server of the main tables, ``granian`` (default) or ``gunicorn``;
- ``BENCH_OUT``: where RESULTS.md, results.json and the plot go, default docs/benchmarks;
- ``BENCH_WEB_CONCURRENCY``, ``BENCH_WEB_THREADS``, ``BENCH_DB_POOL_SIZE``,
  ``BENCH_DB_MAX_OVERFLOW``, ``BENCH_LOG_LEVEL``: server knobs (bench/sync.py).

Every measured run starts from a fresh copy of the seeded template, so the merges and
inserts of one run never shape the next. The databases are the bench's own
(``identity_bench_*``) on the shared PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ceiling, compare, growth, report, seed, sync

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}
WARMUP_S = 2


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def ensure_tools() -> None:
    """wrk and pgbench come from Debian packages; install them when missing."""
    missing = [
        pkg
        for tool, pkg in (("wrk", "wrk"), ("pgbench", "postgresql-client"))
        if shutil.which(tool) is None
    ]
    if missing:
        log(f"installing {' '.join(missing)} (apt-get)")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "postgresql": pg,
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "server": sync.SERVER_ENV,
        "threads": sync.THREADS,  # WEB_THREADS, each server's own
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench_sync(
    plan: seed.SeedPlan,
    people: int,
    clients: list[int],
    runs: int,
    seconds: int,
    scripts: dict[str, dict[Path, int]],
    ceilings: list[str],
) -> dict[str, Any]:
    """wrk against the server, then each pgbench ceiling, per concurrency level,
    alternating, ``runs`` times."""
    out: dict[str, Any] = {}
    for c in clients:
        ours: list[dict[str, Any]] = []
        theirs: dict[str, list[dict[str, float]]] = {name: [] for name in ceilings}
        loads: list[float] = []
        for r in range(runs):
            nonce = f"{(int(time.time()) + r) % 9000 + 1000}"
            url = seed.fresh_copy(plan)
            with sync.served(url) as server:
                sync.run_wrk(server, clients=c, seconds=WARMUP_S, people=people, nonce=nonce + "1")
                before = sync.cpu_seconds(server.process.pid, plan.database)
                ours.append(
                    sync.run_wrk(server, clients=c, seconds=seconds, people=people, nonce=nonce)
                )
                after = sync.cpu_seconds(server.process.pid, plan.database)
            loads.append(os.getloadavg()[0])
            n = int(ours[-1]["requests"])
            ours[-1]["server_cpu_ms"] = (after["server"] - before["server"]) * 1000 / n
            ours[-1]["pg_cpu_ms"] = (after["postgres"] - before["postgres"]) * 1000 / n
            for name in ceilings:
                script_set, mode = ceiling.CEILINGS[name]
                seed.fresh_copy(plan)
                theirs[name].append(
                    ceiling.run_pgbench(
                        plan.database,
                        scripts[script_set],
                        clients=min(c, ceiling.MAX_CLIENTS),
                        seconds=seconds,
                        people=people,
                        nonce=nonce,
                        mode=mode,
                    )
                )
            log(
                f"  {plan.label} c={c} run {r + 1}: {ours[-1]['rps']:.0f} req/s"
                f" p99 {int(ours[-1]['p99_us']) / 1000:.1f} ms"
                f" server {ours[-1]['server_cpu_ms']:.2f} ms pg {ours[-1]['pg_cpu_ms']:.2f} ms;"
                + "".join(f" {n} {theirs[n][-1]['tps']:.0f} tps" for n in ceilings)
                + f" (load {os.getloadavg()[0]:.2f})"
            )
        out[str(c)] = {
            "rps": spread([float(x["rps"]) for x in ours]),
            "p50_ms": spread([int(x["p50_us"]) / 1000 for x in ours]),
            "p99_ms": spread([int(x["p99_us"]) / 1000 for x in ours]),
            "errors": sum(int(x["other_errors"]) for x in ours),
            "s503": sum(int(x["s503"]) for x in ours),
            "s422": sum(int(x["s422"]) for x in ours),
            "requests": sum(int(x["requests"]) for x in ours),
            "load": spread(loads),
            "server_cpu_ms": spread([float(x["server_cpu_ms"]) for x in ours]),
            "pg_cpu_ms": spread([float(x["pg_cpu_ms"]) for x in ours]),
            "ceilings": {
                name: {
                    "tps": spread([x["tps"] for x in runs_]),
                    "failed": sum(int(x["failed"]) for x in runs_),
                    "ratio": spread(
                        [float(o["rps"]) / t["tps"] for o, t in zip(ours, runs_, strict=True)]
                    ),
                }
                for name, runs_ in theirs.items()
            },
        }
    return out


def checkpoint(results: dict[str, Any], out_dir: Path) -> None:
    """What is measured so far, in case a later part fails (a run takes most of an hour)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.partial.json").write_text(json.dumps(results, indent=1) + "\n")


def main() -> int:
    ensure_tools()
    sizes = env_list("BENCH_SIZES", "10k,1m")
    clients = [int(c) for c in env_list("BENCH_CLIENTS", "1,8,32,64,256")]
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    seconds = int(os.environ.get("BENCH_SECONDS", "10"))
    parts = set(env_list("BENCH_PARTS", "sync,compare,growth,async,erasure"))
    ceilings = env_list("BENCH_CEILINGS", ",".join(ceiling.CEILINGS))
    sync_sizes = env_list("BENCH_SYNC_SIZES", ",".join(sizes))
    compare_clients = int(os.environ.get("BENCH_COMPARE_CLIENTS", "32"))
    out_dir = Path(os.environ.get("BENCH_OUT", ROOT / "docs" / "benchmarks"))
    results: dict[str, Any] = {
        "machine": machine(),
        "command": "make bench",
        "settings": {
            "sizes": sizes,
            "clients": clients,
            "runs": runs,
            "seconds": seconds,
            "parts": sorted(parts),
            "ceilings": ceilings,
            "sync_sizes": sync_sizes,
            "server": sync.SERVER,
        },
        "load_before": os.getloadavg(),
        "sizes": {},
    }
    log(
        f"sizes {sizes}, clients {clients}, {runs} runs of {seconds} s, parts {sorted(parts)};"
        f" load {os.getloadavg()[0]:.2f}"
    )
    scripts = ceiling.write_scripts(out_dir / "pgbench")
    largest = max(sizes, key=lambda s: SIZES[s])
    for label in sizes:
        plan = seed.SeedPlan(
            label, SIZES[label], growth=label == largest and SIZES[label] >= 100_000
        )
        seed.seed_template(plan, log=log)
        people = seed.people_count(plan)
        entry: dict[str, Any] = {"contacts": plan.contacts, "people": people}
        if "sync" in parts and label in sync_sizes:
            log(f"sync {label}: wrk vs pgbench ceilings")
            entry["sync"] = bench_sync(plan, people, clients, runs, seconds, scripts, ceilings)
        if "compare" in parts and label == sizes[0]:
            log(f"compare {label}: servers, guards off, {compare.OLD_COMMIT} side by side")
            entry["compare"] = compare.sync_side_by_side(
                plan, people, clients=compare_clients, runs=runs, seconds=seconds, log=log
            )
        if "growth" in parts:
            log(f"growth {label}: per-request cost and round trips (one client, in-process)")
            url = seed.fresh_copy(plan)
            entry["per_request"] = [growth.per_request_cost(url, people, r) for r in range(runs)]
            entry["round_trips"] = growth.round_trips_per_rule(url, people)
            if plan.growth:
                log(f"growth {label}: clusters of 1, 100, 10,000; a 10k + 10k merge")
                entry["clusters"] = growth.cluster_costs(url)
                entry["plans"] = growth.plan_costs(url)
        results["sizes"][label] = entry
        checkpoint(results, out_dir)
        seed.drop(plan.database)
    plan = seed.SeedPlan(largest, SIZES[largest], growth=SIZES[largest] >= 100_000)
    if {"async", "erasure", "compare"} & parts:
        seed.seed_template(plan, log=log)
    if "async" in parts:
        from bench import async_bench

        log(f"async: {async_bench.EVENTS:,} events into {largest} contacts, 1 and 2 partitions")
        results["async"] = async_bench.run(runs=runs, log=log, plan=plan)
        checkpoint(results, out_dir)
    if "compare" in parts:
        events = int(os.environ.get("BENCH_COMPARE_EVENTS", "20000"))
        log(f"compare events: apply_events direct, {events:,} events, 2 threads, {largest}")
        results["events_compare"] = compare.events_side_by_side(
            plan, seed.people_count(plan), events=events, partitions=2, runs=runs, log=log
        )
    if "erasure" in parts:
        from bench import erasure

        log(f"erasure: one value of the 10,000-contact cluster, a list of 1,000, {largest}")
        checkpoint(results, out_dir)
        results["erasure"] = erasure.run(plan, seed.people_count(plan))
        log(f"  erasure: {json.dumps(results['erasure'])}")
    results["load_after"] = os.getloadavg()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "results.partial.json").unlink(missing_ok=True)
    report.write(results, out_dir)
    log(f"wrote {out_dir / 'RESULTS.md'} and {out_dir / 'throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
