"""Real processes for fault tests: a private PostgreSQL instance, free ports, bounded waits.

The PostgreSQL instance never touches the shared one: it lives in a temporary directory on
a free port (run as the ``postgres`` user, since initdb refuses root). Every wait is bounded.
The gunicorn server is tests.support.server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.support.db import migrate

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T], *, timeout_s: float, interval_s: float = 0.1, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}")
        time.sleep(interval_s)


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the postgres user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster: ``start()``, ``stop()``, ``start()`` again, ``destroy()``."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="identity-pg-")))
    #: Production durability (fsync, synchronous commit, full page writes) for measurements;
    #: tests run without it.
    durable: bool = False

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres"]
                + ["--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += " -c max_connections=100"
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-o", options]
                + ["-l", str(self.root / "server.log"), "-w", "-t", "60", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60"]
                + ["stop"]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )

    def running(self) -> bool:
        result = subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True,
            timeout=30,
        )
        return result.returncode == 0

    def destroy(self) -> None:
        if self.datadir.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_private_postgres() -> PrivatePostgres:
    """Initialise, start and migrate a private cluster (about 2-4 s)."""
    pg = PrivatePostgres().init()
    pg.start()
    migrate(pg.url)
    return pg


def start_private_replica(primary: PrivatePostgres) -> PrivatePostgres:
    """A streaming hot standby of ``primary`` on its own free port: ``pg_basebackup -R``
    (which writes ``standby.signal`` and ``primary_conninfo``), then start. initdb's
    default pg_hba trusts replication connections from 127.0.0.1."""
    replica = PrivatePostgres()
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(replica.root, pw.pw_uid, pw.pw_gid)
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)]
            + ["-U", "postgres", "-D", str(replica.datadir), "-R", "-X", "stream", "--no-sync"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    replica.start()
    return replica
