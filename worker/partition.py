"""One Celery worker for one partition: ``python -m worker.partition N``.

Concurrency 1 and prefetch 1, consuming only queue identity.pN, and only while it holds
partition N's lease (worker/ownership.py): however many are started for N, on however
many hosts, one consumes and the others stand by, so events of one key are applied one
message at a time, in publish order. The same command serves `make run` (the generated
Procfile) and docker-compose.yml, where the one worker of each partition simply holds
its lease.
"""

from __future__ import annotations

import os
import sys

from identity.events.messages import queue_name
from identity.settings import Settings


def worker_argv(partition: int, settings: Settings) -> list[str]:
    return [
        "-A", "worker", "worker",
        "--queues", queue_name(partition),
        "--hostname", f"p{partition}@%h",
        "--concurrency", "1",
        "--prefetch-multiplier", "1",
        "--task-events",  # Flower
        "--without-mingle",
        "--without-gossip",
        "--loglevel", settings.log_level,
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    settings = Settings.from_env()
    if len(args) != 1 or not args[0].isdigit():
        raise SystemExit("usage: python -m worker.partition N   (0 <= N < IDENTITY_PARTITIONS)")
    partition = int(args[0])
    if partition >= settings.identity_partitions:
        raise SystemExit(
            f"partition {partition} does not exist: IDENTITY_PARTITIONS is"
            f" {settings.identity_partitions}"
        )
    if not settings.redis_url:
        raise SystemExit("worker: REDIS_URL is not set; without it events are applied in-process")
    os.execv(sys.executable, [sys.executable, "-m", "celery", *worker_argv(partition, settings)])


if __name__ == "__main__":
    main()
