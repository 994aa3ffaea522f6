"""Real processes for fault tests: a private PostgreSQL instance and a gunicorn server.

Neither touches the shared services: the PostgreSQL instance lives in a temporary
directory on a free port (run as the ``postgres`` user, since initdb refuses root)
and the server binds 127.0.0.1 on a free port. Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.db import ROOT, migrate

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s}s")


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
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=100"
        )
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


@dataclass
class Server:
    """A gunicorn process serving ``api:create_app()`` with gunicorn.conf.py."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="identity-server-", suffix=".log")[1])
    )
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> Server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_")},
            "PORT": str(self.port),
            "BIND_HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "WEB_THREADS": "8",
            **self.env,
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "api:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout_s, "gunicorn answering /openapi.json")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{self.log_text()[-4000:]}")
        try:
            return self.request("GET", "/openapi.json", timeout=2)[0] == 200
        except OSError:
            return False

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            all_headers = {"Content-Type": "application/json"} if payload is not None else {}
            all_headers.update(headers or {})
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def remove_log(self) -> None:
        self.log_path.unlink(missing_ok=True)
