"""A real served process for tests: gunicorn with the project's own config, on a free port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.db import ROOT

GUNICORN = Path(sys.executable).parent / "gunicorn"
# Variables a developer's shell may hold that would change what the server under test does.
SCRUBBED = ("DATABASE_URL", "DATABASE_URI", "API_KEYS", "PORT", "BIND_HOST", "WEB_CONCURRENCY")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        """One request on a fresh connection; returns (status, parsed JSON body)."""
        conn = self.connection()
        try:
            payload = body if isinstance(body, bytes) or body is None else json.dumps(body)
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()


def _wait_healthy(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            status, _ = server.request("GET", "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not answer /healthz within {timeout_s}s:\n{server.log()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL to the server's own process group."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # our own session: master and its workers
            process.wait(timeout=10)


@contextmanager
def serve(
    env: Mapping[str, str], cwd: Path, log_path: Path, startup_timeout_s: float = 60
) -> Iterator[Server]:
    """Run ``gunicorn -c gunicorn.conf.py 'api:create_app()'`` until the block exits."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    full_env.update({"PORT": str(port), "BIND_HOST": "127.0.0.1", **env})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "api:create_app()"],
            cwd=cwd,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a hard stop reaches the workers
        )
    server = Server(process, port, log_path)
    try:
        _wait_healthy(server, startup_timeout_s)
        yield server
    finally:
        _stop(process)
