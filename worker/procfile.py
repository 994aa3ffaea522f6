"""The Procfile of the queued set-up: ``python -m worker.procfile [--describe]``.

One line per process: the API, the relay, the Redis Stream bridge, one worker per
partition (IDENTITY_PARTITIONS), Flower. ``bin/run`` writes it and runs it with honcho;
``--describe`` prints where each process listens instead.
"""

from __future__ import annotations

import shlex
import sys

from identity.events.messages import queue_name
from identity.settings import Settings


def procfile(settings: Settings, python: str = sys.executable) -> str:
    py = shlex.quote(python)
    lines = [
        f"api: {py} -m api.serve",
        f"relay: {py} -m worker.relay",
        f"bridge: {py} -m worker.stream_bridge",
        *(f"worker{p}: {py} -m worker.partition {p}" for p in range(settings.identity_partitions)),
        f"flower: {py} -m celery -A worker flower --conf=flowerconfig.py",
    ]
    return "\n".join(lines) + "\n"


def describe(settings: Settings) -> str:
    host = settings.bind_host
    user = settings.flower_basic_auth.get().split(":", 1)[0]
    redis = settings.redis_url.get().rpartition("@")[2]  # never the password
    queues = ", ".join(queue_name(p) for p in range(settings.identity_partitions))
    return "\n".join(
        [
            f"run: API     http://{host}:{settings.port}  (POST /identify, POST /events,"
            " GET /queues, GET /dead-letters, GET /healthz)",
            f"run: relay   event_inbox -> {redis} (re-drive after"
            f" {settings.events_redrive_after_s}s)",
            "run: bridge  XADD identity:events * event '<json>' -> event_inbox",
            f"run: workers one per partition, concurrency 1: {queues}",
            f"run: Flower  http://{host}:{settings.flower_port}  (basic auth, user {user!r})",
        ]
    )


if __name__ == "__main__":
    current = Settings.from_env()
    sys.stdout.write((describe(current) if "--describe" in sys.argv else procfile(current)) + "\n")
