"""A real served process for tests and benchmarks: gunicorn with the project's own config.

``serve(env)`` runs it for a ``with`` block; ``Server(env).start()`` ... ``stop()`` when a
test stops it itself (to read its complete log, say). Either way it binds 127.0.0.1 on a
free port, in its own process group, and every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.db import ROOT
from tests.support.processes import free_port, wait_until

GUNICORN = Path(sys.executable).parent / "gunicorn"
#: The two ways the project serves: gunicorn with its config, and the default launcher
#: (granian, api/serve.py). Tests use gunicorn unless they say otherwise.
COMMANDS = {
    "gunicorn": [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "api:create_app()"],
    "granian": [sys.executable, "-m", "api.serve"],
}
# Variables a developer's shell may hold that would change what the server under test does
# (and any PROMETHEUS_* one: gunicorn.conf.py makes the server its own metrics directory).
SCRUBBED = (
    "DATABASE_URL",
    "DATABASE_URI",
    "API_KEYS",
    "ADMIN_API_KEYS",
    "PORT",
    "BIND_HOST",
    "WEB_CONCURRENCY",
)
# A light server on a shared 2-core machine, unless the caller's env says otherwise.
DEFAULTS = {"WEB_CONCURRENCY": "2", "WEB_THREADS": "8"}


def _temp_log() -> Path:
    fd, name = tempfile.mkstemp(prefix="identity-server-", suffix=".log")
    os.close(fd)
    return Path(name)


@dataclass
class Server:
    """``gunicorn -c gunicorn.conf.py 'api:create_app()'`` with ``env`` on top of the defaults."""

    env: Mapping[str, str]
    cwd: Path = ROOT
    log_path: Path = field(default_factory=_temp_log)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    kind: str = "gunicorn"  # a key of COMMANDS

    def start(self, timeout_s: float = 60) -> Server:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in SCRUBBED and not k.startswith("PROMETHEUS_")
        }
        env.update({**DEFAULTS, "PORT": str(self.port), "BIND_HOST": "127.0.0.1", **self.env})
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                COMMANDS[self.kind],
                cwd=self.cwd,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a hard stop reaches the workers
            )
        wait_until(self._ready, timeout_s=timeout_s, what=f"{self.kind} to answer /healthz")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.kind} exited with {self.process.returncode}:\n{self.log()}"
            )
        try:
            return self.request("GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, raw body).

        ``body`` is sent as JSON, or as it is when it is bytes.
        """
        conn = self.connection(timeout)
        try:
            payload = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
            all_headers = {"Content-Type": "application/json"} if payload is not None else {}
            all_headers.update(headers or {})
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def request_json(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """Like ``request``: (status, parsed JSON body)."""
        status, _, raw = self.request(method, path, body, headers)
        return status, json.loads(raw or b"null")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop), then SIGKILL to the server's process group."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the master and its workers
                self.process.wait(timeout=10)

    def remove_log(self) -> None:
        self.log_path.unlink(missing_ok=True)


@contextmanager
def serve(
    env: Mapping[str, str],
    cwd: Path = ROOT,
    log_path: Path | None = None,
    startup_timeout_s: float = 60,
    kind: str = "gunicorn",
) -> Iterator[Server]:
    """A started ``Server`` until the block exits (stopped also when the block fails)."""
    server = (
        Server(env, cwd, kind=kind) if log_path is None else Server(env, cwd, log_path, kind=kind)
    )
    try:
        yield server.start(startup_timeout_s)
    finally:
        server.stop()
