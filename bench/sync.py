"""Sync path: /identify served as `make run` serves it (granian, api/serve.py) or by gunicorn
with its config (``BENCH_SERVER=gunicorn``), driven by wrk."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench.mix import mix_spec
from tests.support.server import Server, serve

LUA = Path(__file__).with_name("identify.lua")

#: Server knobs of the benchmark run: api/serve.py and gunicorn.conf.py read them (WEB_*),
#: and so does Settings (DB_*). The values are the ones the tuning sweeps chose
#: (docs/DECISIONS.md); the threads per process are each server's own default.
SERVER_ENV = {
    "WEB_CONCURRENCY": os.environ.get("BENCH_WEB_CONCURRENCY", "2"),
    "DB_POOL_SIZE": os.environ.get("BENCH_DB_POOL_SIZE", "8"),
    "DB_MAX_OVERFLOW": os.environ.get("BENCH_DB_MAX_OVERFLOW", "0"),
    "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
}
#: WEB_THREADS by server: granian's blocking threads, gunicorn's gthread threads.
THREADS = {
    kind: os.environ.get("BENCH_WEB_THREADS", default)
    for kind, default in (("granian", "4"), ("gunicorn", "8"))
}


def server_env(kind: str) -> dict[str, str]:
    """The knobs ``kind`` runs with in the benchmark."""
    return {**SERVER_ENV, "WEB_THREADS": THREADS[kind]}


#: The server of the main tables (the default of `make run`); others are measured beside it
#: at 32 clients (bench/run.py).
SERVER = os.environ.get("BENCH_SERVER", "granian")


@contextmanager
def served(
    database_url: str, extra_env: Mapping[str, str] | None = None, kind: str = SERVER
) -> Iterator[Server]:
    env = {"DATABASE_URL": database_url, **server_env(kind), **(extra_env or {})}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as workdir:
        log_path = Path(workdir) / "server.log"
        with serve(env, cwd=Path(workdir), log_path=log_path, kind=kind) as server:
            yield server


def run_wrk(
    server: Server, *, clients: int, seconds: int, people: int, nonce: str
) -> dict[str, object]:
    """One wrk run at ``clients`` connections; returns its BENCH_JSON summary."""
    env = {
        **os.environ,
        "BENCH_PEOPLE": str(people),
        "BENCH_NONCE": nonce,
        "BENCH_MIX": mix_spec(),
    }
    threads = 1 if clients < 64 else 2
    command = [
        "wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(LUA), f"http://127.0.0.1:{server.port}/",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
    match = re.search(r"^BENCH_JSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    summary: dict[str, object] = json.loads(match.group(1))
    requests = int(summary["requests"])  # type: ignore[call-overload]
    seconds_run = int(summary["duration_us"]) / 1e6  # type: ignore[call-overload]
    statuses: dict[str, int] = summary["statuses"]  # type: ignore[assignment]
    summary["rps"] = requests / seconds_run
    summary["ok"] = statuses.get("200", 0)
    summary["s503"] = statuses.get("503", 0)
    # 422: every value of the request ignored by a guard (SPEC "Guards"), a correct answer:
    # the mix's merges of random persons sometimes pair two values that earlier requests
    # of the run made generic. Counted apart from the errors.
    summary["s422"] = statuses.get("422", 0)
    summary["other_errors"] = (
        requests
        - summary["ok"]
        - summary["s503"]
        - summary["s422"]
        + int(summary["connect_errors"])  # type: ignore[call-overload]
        + int(summary["read_errors"])  # type: ignore[call-overload]
        + int(summary["write_errors"])  # type: ignore[call-overload]
        + int(summary["timeouts"])  # type: ignore[call-overload]
    )
    return summary


def _proc_cpu_seconds(pid: str) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(server_pid: int | None, database: str) -> dict[str, float]:
    """CPU seconds used so far by the server's processes and by ``database``'s backends."""
    server = backends = 0.0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except OSError:
            continue
        if server_pid is not None and str(server_pid) in (pid, parent):
            server += _proc_cpu_seconds(pid)
        elif cmdline.startswith("postgres:") and f" {database} " in cmdline:
            backends += _proc_cpu_seconds(pid)
    return {"server": server, "postgres": backends}
