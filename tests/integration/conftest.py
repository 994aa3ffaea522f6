"""Fixtures of the asynchronous-path modules: per module, one private Redis and one running
stack (the relay and a real Celery worker per partition) on the session's PostgreSQL
database. A module overrides ``partitions`` for more than one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from identity.settings import Secret, Settings
from tests.conftest import make_settings, opened_engine
from tests.support.async_stack import AsyncStack, RedisServer, running_redis, running_stack


@pytest.fixture(scope="module")
def partitions() -> int:
    return 1


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def stack(
    pg_url: str, redis: RedisServer, partitions: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AsyncStack]:
    workdir = Path(tmp_path_factory.mktemp("stack"))
    with running_stack(pg_url, redis, partitions, workdir) as stack:
        yield stack


@pytest.fixture
def queued_settings(pg_url: str, redis: RedisServer, partitions: int) -> Settings:
    return make_settings(pg_url, redis_url=Secret(redis.url), identity_partitions=partitions)


@pytest.fixture
def pg(queued_settings: Settings, stack: AsyncStack) -> Iterator[Engine]:
    """The stack's database, contact tables emptied: the stack is up before they are."""
    with opened_engine(queued_settings) as engine:
        yield engine
