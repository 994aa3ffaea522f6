"""Test databases: a private PostgreSQL database per test session, built by Alembic."""

from __future__ import annotations

import os
from pathlib import Path

from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from alembic import command

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = os.environ.get(
    "TEST_DATABASE_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def create_pg_database(name: str) -> str:
    """(Re)create database ``name`` on the admin server; returns its URL."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(name: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def reset_contacts(engine: Engine) -> None:
    """Empty every table and restart ids at 1, so worked examples see ids 1, 2, ..."""
    with engine.begin() as conn:
        tables = [
            r[0]
            for r in conn.execute(
                text(
                    # partition_lease: the running workers' ownership, not data; service_key:
                    # the hash key running processes have cached (deleting it under them
                    # would give two processes two keys)
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename NOT IN ('alembic_version', 'partition_lease', 'service_key')"
                    if engine.dialect.name == "postgresql"
                    else "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT IN ('alembic_version', 'sqlite_sequence', 'partition_lease',"
                    " 'service_key')"
                )
            )
        ]
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
