"""Alembic migrations on fresh databases: up, down to nothing, up again, and no drift."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from alembic import command
from tests.support.db import alembic_config, create_pg_database, drop_pg_database


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new empty database of each kind, never the session's shared one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    name = f"identity_migrations_{os.getpid()}"
    url = create_pg_database(name)
    try:
        yield url
    finally:
        drop_pg_database(name)


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        names = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    return names


def revisions_in_order(url: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(url))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def test_upgrade_downgrade_upgrade_and_no_drift(fresh_url: str) -> None:
    cfg = alembic_config(fresh_url)
    assert tables(fresh_url) == set()

    command.upgrade(cfg, "head")
    built = tables(fresh_url)
    assert {"contact", "alembic_version"} <= built
    command.check(cfg)  # raises when the models and the migrations disagree

    command.downgrade(cfg, "base")
    assert tables(fresh_url) == {"alembic_version"}

    command.upgrade(cfg, "head")
    assert tables(fresh_url) == built
    command.check(cfg)


def test_every_revision_steps_up_and_down_on_its_own(fresh_url: str) -> None:
    # One revision at a time, so each downgrade is exercised against exactly the
    # schema its own upgrade built (not only base <-> head in one go).
    cfg = alembic_config(fresh_url)
    revisions = revisions_in_order(fresh_url)
    assert revisions, "no migrations found"
    states = [tables(fresh_url)]
    for revision in revisions:
        command.upgrade(cfg, revision)
        states.append(tables(fresh_url))
    for before in reversed(states[1:-1]):
        command.downgrade(cfg, "-1")
        assert tables(fresh_url) == before
    command.downgrade(cfg, "-1")
    assert tables(fresh_url) == {"alembic_version"}


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, script.get_heads()
