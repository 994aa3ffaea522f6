"""Side by side at one concurrency, in the same run: what the servers, the guards and the
graph work (links, the change feed, guards) cost on /identify, and what the graph work
costs the events.

Variants, each on its own fresh copy of the same seeded contacts, one after the other
in every round (so the machine's noise falls on all of them alike):

- ``granian``: this tree as `make run` serves it (``python -m api.serve``);
- ``gunicorn``: this tree under ``gunicorn -c gunicorn.conf.py``;
- ``granian, guards off``: this tree with ``GENERIC_THRESHOLD=0`` and
  ``BLOCKED_DEFAULTS=off`` (no generic counting, no blocked patterns; the
  suppression check stays, it is part of the lock-free read);
- ``before graph, gunicorn`` / ``before graph, granian``: the commit before the graph
  work (``BENCH_OLD_COMMIT``, default 3b2d127, checked out in a git worktree at
  ``BENCH_OLD_DIR``, default /tmp/bench-old, run with its own ``PYTHONPATH`` and this
  venv's packages, which it shares), on a template migrated by *its* Alembic head and
  filled with the same rows;
- ``graph, before issue 12, granian``: main as the graph work left it
  (``BENCH_BASE_COMMIT``, default 486a5c6, at ``BENCH_BASE_DIR``, default
  /tmp/bench-base), on this tree's schema: the graph work's cost is *before graph* to
  it, this tree's hot-path work is it to *granian*.

Events: ``bench/events_direct.py`` (apply_events called directly, 2 threads, batches of
500) with this tree and with the old one, on the two schemas.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg2

from bench import seed, sync
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = os.environ.get("BENCH_OLD_COMMIT", "3b2d127")
OLD_DIR = Path(os.environ.get("BENCH_OLD_DIR", "/tmp/bench-old"))
BASE_COMMIT = os.environ.get("BENCH_BASE_COMMIT", "486a5c6")
BASE_DIR = Path(os.environ.get("BENCH_BASE_DIR", "/tmp/bench-base"))
VENV_BIN = Path(sys.executable).parent
GUARDS_OFF = {"GENERIC_THRESHOLD": "0", "BLOCKED_DEFAULTS": "off"}


def ensure_tree(commit: str, where: Path) -> None:
    """A worktree of ``commit`` at ``where`` (made once; left for the next run)."""
    if (where / ".git").exists():
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
        wanted = subprocess.run(
            ["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        if head == wanted:
            return
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT)
    subprocess.run(["git", "worktree", "add", "--detach", str(where), commit], cwd=ROOT, check=True)


def ensure_old_tree() -> None:
    ensure_tree(OLD_COMMIT, OLD_DIR)
    ensure_tree(BASE_COMMIT, BASE_DIR)


def old_env(tree: Path = OLD_DIR) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")}
    env["PYTHONPATH"] = str(tree)
    return env


def _old_template(plan: seed.SeedPlan) -> str:
    return plan.template.removesuffix("_tpl") + "_old_tpl"


def _old_database(plan: seed.SeedPlan) -> str:
    return plan.database + "_old"


def seed_old_template(plan: seed.SeedPlan, log: Callable[[str], None]) -> None:
    """The same rows as ``plan``'s template, on the old tree's schema."""
    name = _old_template(plan)
    tag = f"{plan.tag} old={OLD_COMMIT}"
    if seed.template_tag(name) == tag:
        return
    admin = seed.admin_connect()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tests.support.db import migrate; migrate(sys.argv[1])",
            seed.database_url(name),
        ],
        cwd=OLD_DIR,
        env=old_env(),
        check=True,
    )
    conn = psycopg2.connect(seed._dsn(name))
    with conn, conn.cursor() as cur:
        for chunk in seed._copy_chunks(plan):
            cur.copy_expert(
                "COPY contact (id, phone_number, email, linked_id, link_precedence,"
                " created_at, updated_at) FROM STDIN",
                chunk,
            )
        cur.execute("SELECT setval(pg_get_serial_sequence('contact', 'id'), max(id)) FROM contact")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE contact")
    conn.close()
    with admin.cursor() as cur:
        cur.execute(f"COMMENT ON DATABASE \"{name}\" IS '{tag}'")
    admin.close()
    log(f"seed: {name}: the same {plan.contacts:,} contacts on {OLD_COMMIT}'s schema")


def fresh_old_copy(plan: seed.SeedPlan) -> str:
    conn = seed.admin_connect()
    database = _old_database(plan)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        cur.execute(
            f'CREATE DATABASE "{database}" TEMPLATE "{_old_template(plan)}" STRATEGY FILE_COPY'
        )
    conn.close()
    return seed.database_url(database)


@contextmanager
def old_served(url: str, kind: str, tree: Path = OLD_DIR) -> Iterator[Any]:
    """An older tree's app under gunicorn (its own gunicorn.conf.py) or granian."""
    port = free_port()
    env = (
        old_env(tree)
        | sync.server_env(kind)
        | {
            "DATABASE_URL": url,
            "PORT": str(port),
            "BIND_HOST": "127.0.0.1",
        }
    )
    made: str | None = None  # the metrics directory made here, removed at the end
    if kind == "gunicorn":
        argv = [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "api:create_app()"]
    else:
        made = env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-old-metrics-")
        argv = [
            str(VENV_BIN / "granian"), "--interface", "wsgi", "--factory", "--no-ws",
            "--workers", env["WEB_CONCURRENCY"], "--blocking-threads", env["WEB_THREADS"],
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "api:create_app",
        ]  # fmt: skip
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    out.seek(0)
                    raise RuntimeError(f"old server exited:\n{out.read().decode()[-3000:]}")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            yield SimpleNamespace(port=port, process=process)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)


def _measure(server: Any, database: str, clients: int, seconds: int, people: int) -> dict[str, Any]:
    nonce = f"{int(time.time()) % 9000 + 1000}"
    sync.run_wrk(server, clients=clients, seconds=2, people=people, nonce=nonce + "1")
    before = sync.cpu_seconds(server.process.pid, database)
    result = sync.run_wrk(server, clients=clients, seconds=seconds, people=people, nonce=nonce)
    after = sync.cpu_seconds(server.process.pid, database)
    n = int(result["requests"])  # type: ignore[call-overload]
    result["server_cpu_ms"] = (after["server"] - before["server"]) * 1000 / n
    result["pg_cpu_ms"] = (after["postgres"] - before["postgres"]) * 1000 / n
    return result


VARIANTS = (
    "granian",
    "gunicorn",
    "granian, guards off",
    "graph, before issue 12, granian",
    "before graph, granian",
    "before graph, gunicorn",
)


def sync_side_by_side(
    plan: seed.SeedPlan,
    people: int,
    *,
    clients: int,
    runs: int,
    seconds: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    ensure_old_tree()
    seed_old_template(plan, log)
    raw: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for r in range(runs):
        for variant in VARIANTS:
            if variant.startswith("before graph"):
                url = fresh_old_copy(plan)
                with old_served(url, variant.rsplit(" ", 1)[1]) as server:
                    result = _measure(server, _old_database(plan), clients, seconds, people)
            elif variant.startswith("graph, before issue 12"):
                url = seed.fresh_copy(plan)
                with old_served(url, "granian", BASE_DIR) as server:
                    result = _measure(server, plan.database, clients, seconds, people)
            else:
                url = seed.fresh_copy(plan)
                kind = "gunicorn" if variant == "gunicorn" else "granian"
                extra = GUARDS_OFF if "guards off" in variant else {}
                with sync.served(url, extra, kind=kind) as server:
                    result = _measure(server, plan.database, clients, seconds, people)
            raw[variant].append(result)
            log(
                f"  compare {plan.label} c={clients} run {r + 1} {variant}:"
                f" {result['rps']:.0f} req/s p99 {int(result['p99_us']) / 1000:.1f} ms"
                f" server {result['server_cpu_ms']:.2f} ms pg {result['pg_cpu_ms']:.2f} ms"
                f" statuses {result['statuses']}"
            )
    seed.drop(_old_database(plan))
    return {
        variant: {
            "rps": spread([float(x["rps"]) for x in rows]),
            "p99_ms": spread([int(x["p99_us"]) / 1000 for x in rows]),
            "server_cpu_ms": spread([float(x["server_cpu_ms"]) for x in rows]),
            "pg_cpu_ms": spread([float(x["pg_cpu_ms"]) for x in rows]),
            "errors": sum(int(x["other_errors"]) for x in rows),
            "s422": sum(int(x["s422"]) for x in rows),
            "requests": sum(int(x["requests"]) for x in rows),
        }
        for variant, rows in raw.items()
    }


def events_side_by_side(
    plan: seed.SeedPlan,
    people: int,
    *,
    events: int,
    partitions: int,
    runs: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """apply_events directly, this tree vs the old one, same rows, each on its schema."""
    ensure_old_tree()
    seed_old_template(plan, log)
    trees = {"now": ROOT, "graph, before issue 12": BASE_DIR, "before graph": OLD_DIR}
    out: dict[str, list[dict[str, float]]] = {which: [] for which in trees}
    script = str(ROOT / "bench" / "events_direct.py")
    for r in range(runs):
        for which, tree in trees.items():
            old = which == "before graph"
            url = fresh_old_copy(plan) if old else seed.fresh_copy(plan)
            args = [sys.executable, script, url, str(people), str(events), str(partitions)]
            done = subprocess.run(
                [*args, f"d{r}"],
                cwd=tree,
                env=old_env(tree),
                capture_output=True,
                text=True,
                timeout=900,
            )
            if done.returncode != 0:
                raise RuntimeError(f"events_direct failed:\n{done.stdout}\n{done.stderr}")
            out[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
            log(
                f"  events {plan.label} p={partitions} run {r + 1} {which}:"
                f" {out[which][-1]['events_per_s']:,.0f} events/s,"
                f" Python {out[which][-1]['python_cpu_ms_per_batch']:.1f} ms CPU a batch"
            )
    seed.drop(_old_database(plan))
    return {
        which: {
            "events_per_s": spread([x["events_per_s"] for x in rows]),
            "python_cpu_ms_per_batch": spread([x["python_cpu_ms_per_batch"] for x in rows]),
        }
        for which, rows in out.items()
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
