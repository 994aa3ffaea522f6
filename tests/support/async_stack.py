"""Real processes for the asynchronous path: a private Redis, Celery workers, the relay, Flower.

Every process runs in its own session (process group) so a test can SIGKILL a worker
with its pool children; ``AsyncStack.close`` kills whatever is left, and every
wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from werkzeug.serving import make_server

from tests.support.db import ROOT
from tests.support.processes import free_port, wait_until

# A developer's shell must not change what the processes under test do.
SCRUBBED = ("DATABASE_URL", "DATABASE_URI", "REDIS_URL", "API_KEYS", "IDENTITY_PARTITIONS")


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal a process and everything in its session; reap it."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class RedisServer:
    """A private redis-server on a free port, without persistence (so a restart loses all)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.ping, timeout_s=10, what="redis-server to answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class AsyncStack:
    """Workers, relay and Flower against one database and one Redis."""

    database_url: str
    redis: RedisServer
    partitions: int
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis.url,
            IDENTITY_PARTITIONS=str(self.partitions),
            EVENTS_REDRIVE_AFTER_S="2",
            # A SIGKILLed worker's partition is taken over by the next worker within this.
            PARTITION_LEASE_S="2",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.update(more)
        return env

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        self.kill(name)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=dict(env or self.env()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, process, log_path)
        self.procs[name] = proc
        return proc

    def start_worker(self, partition: int, *, wait: bool = True) -> Proc:
        name = f"worker{partition}"
        log_path = self.workdir / f"{name}.log"
        before = log_path.read_text(errors="replace").count(" ready.") if log_path.exists() else 0
        proc = self.spawn(
            name,
            [sys.executable, "-m", "worker.partition", str(partition)],
        )
        if wait:
            wait_until(
                lambda: proc.log().count(" ready.") > before or proc.process.poll() is not None,
                timeout_s=60,
                what=f"{name} to be ready",
            )
            assert proc.process.poll() is None, f"{name} exited:\n{proc.log()[-3000:]}"
        return proc

    def start_workers(self) -> None:
        procs = [self.start_worker(p, wait=False) for p in range(self.partitions)]
        for proc in procs:
            wait_until(
                lambda p=proc: " ready." in p.log() or p.process.poll() is not None,
                timeout_s=90,
                what=f"{proc.name} to be ready",
            )
            assert proc.process.poll() is None, f"{proc.name} exited:\n{proc.log()[-3000:]}"

    def start_relay(self) -> Proc:
        return self.spawn("relay", [sys.executable, "-m", "worker.relay"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            kill_group(proc.process, sig)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.procs.values())

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@contextmanager
def running_stack(
    database_url: str, redis: RedisServer, partitions: int, workdir: Path
) -> Iterator[AsyncStack]:
    """One worker per partition and the relay, all killed on the way out."""
    stack = AsyncStack(database_url, redis, partitions, workdir)
    try:
        forget_leases(database_url)  # of workers of earlier stacks, all killed
        stack.start_workers()
        stack.start_relay()
        yield stack
    finally:
        stack.close()


def forget_leases(database_url: str) -> None:
    """Drop every partition lease: only when no worker of this database is alive."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM partition_lease"))
    finally:
        engine.dispose()


@contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_applied(engine: Engine, ids: set[str], stack: AsyncStack, timeout_s: float = 120) -> None:
    """Until every event of ``ids`` is in the ledger and the inbox is empty (a database that
    is down or restarting meanwhile is waited for too)."""

    def done() -> bool:
        try:
            with engine.connect() as conn:
                applied = set(conn.execute(text("SELECT event_id FROM processed_event")).scalars())
                pending = conn.execute(text("SELECT count(*) FROM event_inbox")).scalar_one()
        except DBAPIError:
            return False
        return ids <= applied and pending == 0

    try:
        wait_until(done, timeout_s=timeout_s, interval_s=0.2, what="every event to be applied")
    except AssertionError:
        raise AssertionError(f"not every event was applied\n{stack.logs()}") from None


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` over real HTTP (threaded werkzeug) on a free port; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def http_json(
    address: str,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 30,
) -> tuple[int, Any]:
    host, _, port = address.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        payload = None if body is None else json.dumps(body)
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            return response.status, raw.decode(errors="replace")
    finally:
        conn.close()
