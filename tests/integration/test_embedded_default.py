"""Nothing configured: the real server runs on the embedded SQLite file of its working directory.

Done the way `make run` does it (alembic upgrade head, then gunicorn with the
project's config), but in a temporary directory with DATABASE_URL unset.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tests.support.db import ROOT
from tests.support.load import Outcome, check_outcome, run_clients
from tests.support.processes import free_port, wait_until
from tests.support.server import SCRUBBED, Server, serve

pytestmark = pytest.mark.slow

ALEMBIC = Path(sys.executable).parent / "alembic"
FLASK = Path(sys.executable).parent / "flask"
DB_FILE = "identity.sqlite3"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("embedded")
    assert not (path / ".env").exists()
    return path


@pytest.fixture(scope="module")
def migrated(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    result = subprocess.run(
        [str(ALEMBIC), "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def server(workdir: Path, migrated: object) -> Iterator[Server]:
    env = {"WEB_CONCURRENCY": "2", "LOG_LEVEL": "INFO"}  # no DATABASE_URL: scrubbed by serve()
    with serve(env, cwd=workdir, log_path=workdir / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def sqlite_engine(workdir: Path, migrated: object) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{workdir / DB_FILE}")
    yield engine
    engine.dispose()


def test_migration_creates_the_database_file_in_the_working_directory(
    workdir: Path, migrated: subprocess.CompletedProcess[str]
) -> None:
    assert (workdir / DB_FILE).is_file()
    assert "Running upgrade" in migrated.stderr  # alembic really built the schema there


def test_server_says_it_uses_the_embedded_sqlite_file(server: Server, workdir: Path) -> None:
    status, body = server.request_json("GET", "/healthz")
    assert (status, body) == (200, {"status": "ok", "database": "sqlite"})
    log = server.log()
    assert "embedded SQLite" in log
    assert str(workdir / DB_FILE) in log
    assert "postgresql" not in log


def test_dev_server_says_it_once_and_shows_a_readable_debugger_pin(
    workdir: Path, migrated: object
) -> None:
    """`make dev`: Flask's reloading server; its reloader and its serving child both load the
    app. The warning comes once, and the debugger PIN (phone-shaped) is printed in clear."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED and not k.startswith(("PROMETHEUS_", "WERKZEUG_", "FLASK_"))
    }
    log_path = workdir / "dev.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [str(FLASK), "--app", "api", "run", "--debug", "--port", str(free_port())],
            cwd=workdir,
            env={**env, "LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the reloader and its child
        )
    try:
        wait_until(
            lambda: "Debugger PIN" in log_path.read_text(errors="replace"),
            timeout_s=60,
            what="the development server to print its debugger PIN",
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    lines = log_path.read_text(errors="replace").splitlines()
    pin = [json.loads(line)["message"] for line in lines if "Debugger PIN" in line]
    assert len(pin) == 1 and re.fullmatch(r" \* Debugger PIN: \d+(-\d+)+", pin[0]), pin
    said = [line for line in lines if "embedded SQLite" in line]
    assert len(said) == 1, said


def test_worked_example_on_the_embedded_database(
    server: Server, sqlite_engine: Engine, workdir: Path
) -> None:
    george = "george@hillvalley.edu"
    biff = "biffsucks@hillvalley.edu"
    requests = [
        ({"email": george, "phoneNumber": "919191"}, (1, [george], ["919191"], [])),
        ({"email": biff, "phoneNumber": 717171}, (2, [biff], ["717171"], [])),
        (
            {"email": george, "phoneNumber": "717171"},
            (1, [george, biff], ["919191", "717171"], [2]),
        ),
    ]
    outcome = Outcome()
    for body, (primary, emails, phones, secondaries) in requests:
        status, answer = server.request_json("POST", "/identify", body)
        assert status == 200, answer
        assert answer == {
            "contact": {
                "primaryContactId": primary,
                "emails": emails,
                "phoneNumbers": phones,
                "secondaryContactIds": secondaries,
            }
        }
        outcome.answered.append((body, answer))

    # A short concurrent burst: two gunicorn processes share the one SQLite file.
    emails = [f"e{i}@shop.example" for i in range(10)]
    phones = [f"44{i:04d}" for i in range(10)]

    def plan(seed: int) -> list[dict[str, Any]]:
        return [
            {"email": emails[(seed + i) % 10], "phoneNumber": phones[(seed * 3 + i * 7) % 10]}
            if i % 3
            else {"email": emails[(seed * 5 + i) % 10]}
            for i in range(25)
        ]

    burst, elapsed = run_clients(server, [plan(seed) for seed in range(8)])
    outcome.answered += burst.answered
    outcome.failures += burst.failures
    check_outcome(
        "embedded burst", outcome, elapsed, server, sqlite_engine, clients=8, min_relinked=1
    )
    assert (workdir / DB_FILE).stat().st_size > 0


def test_server_says_it_once_from_the_master_not_once_per_worker(server: Server) -> None:
    """Runs after the burst above: both workers have long built their app by now."""
    log = server.log()
    assert log.count("Booting worker with pid") == 2  # WEB_CONCURRENCY=2
    said = [json.loads(line) for line in log.splitlines() if "embedded SQLite" in line]
    assert len(said) == 1, said
    assert said[0]["logger"] == "gunicorn.error" and said[0]["level"] == "WARNING"


def test_bad_input_on_the_real_server(server: Server) -> None:
    status, body = server.request_json("POST", "/identify", b'{"email": 5}')
    assert status == 400 and body["field"] == "email"
    status, body = server.request_json("POST", "/identify", b"{}", {"Content-Type": "text/plain"})
    assert status == 415 and "error" in body
    big = json.dumps({"email": "a" * 100_000 + "@b.c"}).encode()
    status, body = server.request_json("POST", "/identify", big)
    assert status == 413 and "error" in body


def test_oversized_chunked_body_is_refused(server: Server) -> None:
    # No Content-Length to check up front: the limit must hold while reading the stream.
    conn = server.connection()
    try:
        conn.putrequest("POST", "/identify")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"[" + b" " * 8191
        for _ in range(16):  # 128 KiB, twice the default limit
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        conn.close()
    assert status == 413, body
    assert "error" in body
