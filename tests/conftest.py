"""Fixtures shared by every tier: real PostgreSQL and SQLite databases built by Alembic."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from api import create_app
from identity.settings import Secret, Settings
from identity.storage.db import create_db_engine
from tests.support.async_stack import RedisServer
from tests.support.db import create_pg_database, drop_pg_database, migrate, reset_contacts
from tests.support.processes import PrivatePostgres, start_private_postgres

BACKENDS = ("postgresql", "sqlite")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A private, migrated PostgreSQL database for this test session."""
    name = f"identity_test_{os.getpid()}"
    url = create_pg_database(name)
    migrate(url)
    yield url
    drop_pg_database(name)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "identity.sqlite3"
    url = f"sqlite:///{path}"
    migrate(url)
    return url


def make_settings(url: str, **overrides: object) -> Settings:
    return Settings(database_url=Secret(url), **overrides)  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    return make_settings(url)


@contextmanager
def opened_engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the settings' database, with the contact tables emptied first."""
    engine = create_db_engine(settings)
    reset_contacts(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def opened_app(settings: Settings) -> Iterator[Flask]:
    """The app on ``settings`` in testing mode; its engine disposed afterwards."""
    app = create_app(settings)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        app.extensions["identity.engine"].dispose()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    with opened_engine(settings) as engine:
        yield engine


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[Flask]:
    with opened_app(settings) as app:
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A private, migrated PostgreSQL instance that a test may stop and start."""
    pg = start_private_postgres()
    yield pg
    pg.destroy()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (no persistence) that a test may stop and start."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
