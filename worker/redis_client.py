"""Plain redis-py clients for REDIS_URL: ``redis://`` / ``rediss://``, or Sentinel.

``sentinel://[:password@]host:port[;sentinel://host:port...][/db]`` (kombu's syntax, as
Celery's broker takes it) with ``REDIS_SENTINEL_MASTER`` naming the service: the client
asks the sentinels for the current primary on every new connection, so after a failover
the next command reconnects to the promoted replica.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel

from identity.settings import Settings


def sentinel_hosts(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """The sentinels, the password and the database of a kombu ``sentinel://`` URL."""
    hosts: list[tuple[str, int]] = []
    password: str | None = None
    db = 0
    for part in url.split(";"):
        parsed = urlsplit(part.strip())
        hosts.append((parsed.hostname or "127.0.0.1", parsed.port or 26379))
        password = password or parsed.password
        if parsed.path.strip("/").isdigit():
            db = int(parsed.path.strip("/"))
    return hosts, password, db


def redis_client(settings: Settings, **options: Any) -> redis.Redis:
    url = settings.redis_url.get()
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url, **options)
    hosts, password, db = sentinel_hosts(url)
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(hosts, sentinel_kwargs=timeouts, **timeouts)
    return sentinel.master_for(settings.redis_sentinel_master, db=db, password=password, **options)
