"""``python -m worker.erase``: an erasure list from a privacy ticket system, idempotent and
resumable, with progress that never shows a value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.db import ROOT


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "worker.erase", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_an_erasure_list_is_idempotent_resumable_and_quiet_about_values(
    client: FlaskClient, engine: Engine, pg_url: str, tmp_path: Path
) -> None:
    for n in range(6):
        client.post("/identify", json={"email": f"gone{n}@shop.test", "phoneNumber": f"55590{n}"})
    client.post("/identify", json={"email": "stays@shop.test", "phoneNumber": "5559999"})
    values = tmp_path / "ticket-42.txt"
    values.write_text(
        "# privacy ticket 42\n"
        "email:gone0@shop.test\n"
        "gone1@shop.test\n"
        "phone:555-902\n"
        "555903\n"
        "\n"
        "person:5\n"
        "email:not an address\n"
        "person:6\n"
    )
    first = run_cli(pg_url, str(values))
    assert first.returncode == 1  # one line refused, the rest erased
    report = json.loads(first.stdout)
    assert report["erased"] == 6 and report["contacts"] == 6
    assert [r["line"] for r in report["refused"]] == [8]
    for value in ("gone", "55590", "not an address"):
        assert value not in first.stdout and value not in first.stderr
    assert "9/9 lines" in first.stderr
    with engine.connect() as conn:
        live = conn.execute(
            text("SELECT id, email, phone_number FROM contact WHERE deleted_at IS NULL ORDER BY id")
        ).all()
    # An email line clears the email, a phone line the phone, a person line everything.
    assert [tuple(r) for r in live] == [
        (1, None, "555900"),
        (2, None, "555901"),
        (3, "gone2@shop.test", None),
        (4, "gone3@shop.test", None),
        (7, "stays@shop.test", "5559999"),
    ]
    # The state file says all nine lines are done: a second run skips them all.
    again = json.loads(run_cli(pg_url, str(values)).stdout)
    assert again["skipped"] == 9 and again["erased"] == 0
    # From scratch (state removed), erasing the same list again erases nothing new.
    (tmp_path / "ticket-42.txt.state").unlink()
    repeat = json.loads(run_cli(pg_url, str(values)).stdout)
    assert repeat["contacts"] == 0 and repeat["erased"] == 6
