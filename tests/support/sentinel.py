"""A private Redis Sentinel set-up: a primary, a replica and one sentinel, all on free
loopback ports, without persistence. ``redis-server --sentinel`` is Sentinel itself (the
``redis-sentinel`` command is the same binary)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.async_stack import RedisServer, kill_group
from tests.support.processes import free_port, wait_until

MASTER = "mymaster"


def _command(port: int, *words: str) -> str:
    """One inline command; the first line of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        if data.startswith((b"*", b"$")):  # an array or bulk string: read a little more
            sock.settimeout(0.2)
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except OSError:
                pass
    return data.decode(errors="replace")


class ReplicaServer(RedisServer):
    def __init__(self, workdir: Path, primary_port: int) -> None:
        super().__init__(workdir)
        self.primary_port = primary_port

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir),
             "--replicaof", "127.0.0.1", str(self.primary_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_until(self.ping, timeout_s=10, what="the Redis replica to answer PING")
        wait_until(
            lambda: "master_link_status:up" in _command(self.port, "INFO", "replication"),
            timeout_s=20, what="the Redis replica to sync",
        )  # fmt: skip


class SentinelServer:
    def __init__(self, workdir: Path, primary_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.primary_port = primary_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A kombu sentinel:// URL (one sentinel here; ``;`` separates several)."""
        return f"sentinel://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        config = self.workdir / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [binary, str(config), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_until(
            lambda: f"{self.primary_port}" in self.master_port_answer(),
            timeout_s=10, what="the sentinel to monitor the primary",
        )  # fmt: skip

    def master_port_answer(self) -> str:
        try:
            return _command(self.port, "SENTINEL", "get-master-addr-by-name", MASTER)
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None


SentinelSet = tuple[RedisServer, ReplicaServer, SentinelServer]


@contextmanager
def running_sentinel_set(workdir: Path) -> Iterator[SentinelSet]:
    primary = RedisServer(workdir)
    primary.start()
    replica = ReplicaServer(workdir, primary.port)
    sentinel = SentinelServer(workdir, primary.port)
    try:
        replica.start()
        sentinel.start()
        yield primary, replica, sentinel
    finally:
        sentinel.stop()
        replica.stop()
        primary.stop()
