"""Guards in separate processes: a malformed blocked pattern refuses to start a real server
(naming the variable), and the operators' CLI ``python -m worker.guards`` against a test
database on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.settings import Settings
from identity.storage.db import utcnow
from tests.support.db import ROOT
from tests.support.server import SCRUBBED, Server


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("name", "raw"),
    [("BLOCKED_PHONES", r"555\d{4};;(unclosed"), ("BLOCKED_EMAILS", "[a-")],
)
def test_a_malformed_pattern_refuses_to_start_the_server_naming_it(
    pg_url: str, tmp_path: Path, name: str, raw: str
) -> None:
    server = Server({"DATABASE_URL": pg_url, name: raw}, cwd=tmp_path)
    try:
        with pytest.raises(AssertionError, match="gunicorn exited"):
            server.start(timeout_s=30)
        log = server.log()
    finally:
        server.stop()
        server.remove_log()
    assert name in log
    assert "is not valid" in log


def test_a_malformed_pattern_refuses_create_app_naming_it(pg_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from api import create_app; create_app()"],
        cwd=tmp_path,
        env=clean_env(DATABASE_URL=pg_url, BLOCKED_PHONES="+1(555"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SettingsError" in done.stderr and "BLOCKED_PHONES" in done.stderr


def cli(settings: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.guards", *args],
        cwd=cwd,
        env=clean_env(DATABASE_URL=settings.database_url.get(), PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # a dozen interpreter starts
def test_the_cli_lists_marks_clears_and_prunes(
    settings: Settings, client: FlaskClient, engine: Engine, tmp_path: Path
) -> None:
    client.post("/identify", json={"email": "marty@shop.test", "phoneNumber": "5550100"})

    listed = cli(settings, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    listing = json.loads(listed.stdout)
    assert listing["generic"] == [] and listing["suppressed"] == 0
    assert r"(\d)\1{6,}" in listing["blocked"]["phoneNumber"]

    marked = cli(settings, tmp_path, "mark", "--phone", "555-0100")
    assert marked.returncode == 0, marked.stderr
    guard = json.loads(marked.stdout)["guard"]
    assert (guard["field"], guard["value"], guard["partners"]) == ("phoneNumber", "5550100", 1)
    answer = client.post("/identify", json={"email": "doc@shop.test", "phoneNumber": "5550100"})
    assert answer.get_json()["ignored"] == [{"field": "phoneNumber", "reason": "generic"}]

    again = cli(settings, tmp_path, "mark", "--phone", "5550100")
    assert again.returncode == 1 and "generic already" in again.stderr
    assert [g["id"] for g in json.loads(cli(settings, tmp_path, "list").stdout)["generic"]] == [
        guard["id"]
    ]
    bad = cli(settings, tmp_path, "mark", "--email", "not-an-address")
    assert bad.returncode == 2 and "email must look like an address" in bad.stderr
    assert "Traceback" not in bad.stderr

    cleared = cli(settings, tmp_path, "clear", str(guard["id"]))
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout) == {"cleared": guard["id"]}
    missing = cli(settings, tmp_path, "clear", str(guard["id"]))
    assert missing.returncode == 1 and "no generic value" in missing.stderr

    with engine.connect() as conn:
        feed = conn.execute(
            text("SELECT kind, cause, payload FROM change WHERE kind LIKE 'guard.%' ORDER BY seq")
        ).all()
    assert [(k, c) for k, c, _ in feed] == [
        ("guard.marked", "cli:guards:mark"),
        ("guard.cleared", "cli:guards:clear"),
    ]
    assert all("5550100" not in str(p) for _, _, p in feed)

    with engine.begin() as conn:  # an erased (not suppressed) hash past retention, one within
        for name, age in (("old", timedelta(days=8)), ("new", timedelta(days=1))):
            conn.execute(
                text(
                    "INSERT INTO erased_value (value_hash, kind, erased_at, suppressed)"
                    " VALUES (:h, 'email', :at, false)"
                ),
                {"h": name, "at": utcnow() - age},
            )
    pruned = cli(settings, tmp_path, "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout) == {"pruned": 1}
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT value_hash FROM erased_value")).scalars()) == ["new"]
