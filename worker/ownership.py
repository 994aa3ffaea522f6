"""Partition ownership in the worker: consume partition N's queue only while holding its lease.

A partition worker (``python -m worker.partition N``) starts without consuming its queue.
A thread of the main process takes the lease (``identity.events.lease``) once it is free,
then, in this order: publishes the new fencing token to the pool child (shared memory),
puts back at the head of the queue every message a previous owner took and did not
acknowledge (it died or was paused holding it: per-key order is kept), and starts
consuming. It renews every third of ``PARTITION_LEASE_S``. When a renewal finds the token
changed (a standby took over while this process was paused), or no renewal succeeded
for most of a lease, it stops consuming. Other workers for the same partition are
standbys: they poll until the lease expires. docs/ASYNC.md, "Partition ownership".

The pool child applies each message with the token it reads here, and the apply
transaction checks it (``lease.check_fence``): whatever this thread believes, a write
under a token that is no longer current never commits.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import bootsteps
from celery.worker import state as worker_state
from sqlalchemy.engine import Engine

from identity.events import lease
from identity.events.messages import queue_name
from identity.settings import Settings
from identity.storage.db import create_db_engine, run_in_transaction
from worker.redis_client import redis_client

log = logging.getLogger("worker.ownership")

#: The token a child reads when no lease is involved (no ownership: SQLite, tests).
NO_FENCE = -1
#: The token while this process holds no lease: any apply is refused.
NOT_OWNER = 0
#: Kombu's Redis transport keeps taken, unacknowledged messages in this hash (tag ->
#: [message, exchange, routing key]), their delivery times in this sorted set.
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
#: A renewal must succeed within this share of the lease, or the owner stops consuming
#: before the lease could expire on the database's clock (and a standby start).
SAFETY_SHARE = 0.8


class Shared:
    """Values the main process writes and the pool child reads (created before the fork)."""

    def __init__(self) -> None:
        self.token = multiprocessing.Value("q", NO_FENCE, lock=False)
        self.consuming = multiprocessing.Value("b", 0, lock=False)


_shared: Shared | None = None
#: Engines of the main process, which a pool child forked later must never use.
_parent_engines: list[Engine] = []


def forget_parent_engines() -> None:
    """In a new pool child: drop the main process's pooled connections without closing them."""
    for engine in _parent_engines:
        engine.dispose(close=False)


def shared() -> Shared:
    global _shared
    if _shared is None:
        _shared = Shared()
    return _shared


def current_token() -> int | None:
    """The token a pool child applies under; ``None`` when no lease is involved."""
    token = int(shared().token.value)
    return None if token == NO_FENCE else token


def partition_of_queue(name: str, partitions: int) -> int | None:
    for partition in range(partitions):
        if queue_name(partition) == name:
            return partition
    return None


def _unacked_of(client: redis.Redis, queue: str) -> list[str]:
    """Tags of messages of ``queue`` taken and not acknowledged, newest first."""
    tags: list[tuple[float, str]] = []
    for raw_tag, raw in client.hgetall(UNACKED).items():
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except ValueError:
            continue
        if routing_key != queue:
            continue
        tag = raw_tag.decode() if isinstance(raw_tag, bytes) else str(raw_tag)
        tags.append((float(client.zscore(UNACKED_INDEX, tag) or 0.0), tag))
    return [tag for _, tag in sorted(tags, reverse=True)]


def restore_unacked(client: redis.Redis, queue: str, only_tag: str | None = None) -> int:
    """Put the taken, unacknowledged messages of ``queue`` back at its head, oldest first.

    Kombu consumes with BRPOP (from the right), so RPUSH of the newest first leaves the
    oldest to be taken next. Each message is moved in one WATCH/MULTI transaction, as
    kombu's own ``restore_by_tag`` does: two restorers never both get it. ``only_tag``:
    just that message (a fenced owner giving back the one it holds).
    """
    restored = 0
    for tag in [only_tag] if only_tag else _unacked_of(client, queue):
        with client.pipeline() as pipe:
            try:
                pipe.watch(UNACKED)  # type: ignore[no-untyped-call]
                raw = pipe.hget(UNACKED, tag)
                pipe.multi()
                pipe.zrem(UNACKED_INDEX, tag)
                pipe.hdel(UNACKED, tag)
                if raw:
                    message, _exchange, _routing_key = json.loads(raw)
                    message.setdefault("headers", {})["redelivered"] = True  # as kombu does
                    # A fresh tag: the paused owner's late acknowledgement of the old tag
                    # must not drop the new consumer's unacknowledged entry.
                    message.setdefault("properties", {})["delivery_tag"] = str(uuid.uuid4())
                    pipe.rpush(queue, json.dumps(message))
                pipe.execute()
            except redis.WatchError:
                continue  # someone else restored or acknowledged it meanwhile
        if raw:
            restored += 1
    return restored


class Holder:
    """The lease of one partition for one worker process, and what follows from it."""

    def __init__(
        self,
        settings: Settings,
        partition: int,
        owner: str,
        *,
        start_consuming: Callable[[], None],
        stop_consuming: Callable[[], None],
        resync: Callable[[], object] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.partition = partition
        self.queue = queue_name(partition)
        self.owner = owner
        self.lease_s = float(settings.partition_lease_s)
        self.interval_s = max(0.1, self.lease_s / 3)
        self.engine = engine or create_db_engine(settings, pool_size=1, max_overflow=0)
        _parent_engines.append(self.engine)
        self.redis = redis_client(settings, socket_timeout=5, socket_connect_timeout=5)
        self._start_consuming = start_consuming
        self._stop_consuming = stop_consuming
        self._resync = resync
        self.token: int | None = None
        self.consume = False  # what the event loop's consumer should do (set after restores)
        self.valid_until = 0.0  # monotonic: stop consuming past this without a renewal
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # The thread --------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            shared().token.value = NOT_OWNER
            self._thread = threading.Thread(
                target=self._run, name=f"lease-p{self.partition}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        log.info(
            "partition %d: standby (owner id %s); waiting for the lease", self.partition, self.owner
        )
        while not self._stopping.is_set():
            try:
                if self.token is None:
                    self._try_take()
                else:
                    self._renew()
                    if self.token is not None and not self.consume:
                        self._start()
            except Exception as error:  # the database or Redis away: keep trying
                log.warning(
                    "partition %d: lease: %s: %s", self.partition, type(error).__name__, error
                )
            if self.token is not None and time.monotonic() > self.valid_until:
                self._lose("no renewal succeeded within the lease")
            if self._resync is not None:
                self._resync()  # a consumer restart (broker reconnect) cannot drift from us
            self._stopping.wait(self.interval_s)

    def _try_take(self) -> None:
        token = run_in_transaction(
            self.engine,
            lambda conn: lease.try_acquire(
                conn, partition=self.partition, owner=self.owner, lease_s=self.lease_s
            ),
        )
        if token is None:
            return
        started = time.monotonic()
        self.token = token
        self.valid_until = started + self.lease_s * SAFETY_SHARE
        shared().token.value = token
        self._start()

    def _start(self) -> None:
        """Once the lease is ours: put back what a previous owner held, then consume.

        Run again on the next round when Redis refused (the lease is renewed meanwhile).
        """
        restored = restore_unacked(self.redis, self.queue)
        self.consume = True
        self._start_consuming()
        shared().consuming.value = 1
        log.warning(
            "partition %d: owner now (token %s); %d message(s) a previous owner held put back"
            " at the head; consuming %s",
            self.partition,
            self.token,
            restored,
            self.queue,
        )

    def _renew(self) -> None:
        token = self.token
        assert token is not None
        started = time.monotonic()
        kept = run_in_transaction(
            self.engine,
            lambda conn: lease.renew(
                conn, partition=self.partition, owner=self.owner, token=token, lease_s=self.lease_s
            ),
        )
        if kept:
            self.valid_until = started + self.lease_s * SAFETY_SHARE
        else:
            self._lose(f"token {token} was taken over")

    def _lose(self, why: str) -> None:
        shared().token.value = NOT_OWNER  # first: the child's next apply is refused
        self.token = None
        self.consume = False
        self._stop_consuming()
        shared().consuming.value = 0
        log.warning("partition %d: lease lost (%s); stopped consuming", self.partition, why)

    def stop(self) -> None:
        """Stop renewing and give the lease up (a standby takes it at once)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease_s)
        token, self.token = self.token, None
        self.consume = False
        shared().token.value = NOT_OWNER
        shared().consuming.value = 0
        if token is not None:
            try:
                run_in_transaction(
                    self.engine,
                    lambda conn: lease.release(
                        conn, partition=self.partition, owner=self.owner, token=token
                    ),
                )
                log.info("partition %d: lease released", self.partition)
            except Exception as error:
                log.warning("partition %d: could not release the lease: %s", self.partition, error)
        self.redis.close()
        self.engine.dispose()


def owner_id(hostname: str) -> str:
    """Unique per process and run: a restarted worker is a new owner (a new token)."""
    return f"{hostname or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _run_in_loop(c: Any, action: Callable[[], None], timeout_s: float) -> None:
    """Run ``action`` in the consumer's event loop thread and wait for it (bounded)."""
    done = threading.Event()

    def call() -> None:
        try:
            action()
        finally:
            done.set()

    c.call_soon(call)
    if not done.wait(timeout_s):
        log.warning("the worker's event loop did not run the consumer change within %ss", timeout_s)


def _sync_consumer(c: Any, queue: str, want: bool) -> None:
    """In the event loop: consume ``queue`` exactly when ``want`` (idempotent, any order).

    While the consumer restarts (the broker reconnecting) there is no task consumer:
    the selection is changed, and the restarted consumer follows it.
    """
    queues = c.app.amqp.queues
    if c.task_consumer is None:
        if want:
            queues.select_add(queues[queue])
        else:
            queues.deselect(queue)
        return
    consuming = c.task_consumer.consuming_from(queue)
    if want and not consuming:
        c.add_task_queue(queue)
    elif not want and consuming:
        c.cancel_task_queue(queue)


class PartitionOwnership(bootsteps.StartStopStep):
    """Consumer bootstep: the queue of the worker's partition is consumed only under its lease.

    Active when the worker was started for exactly one partition queue (``worker.partition``)
    on PostgreSQL; otherwise the worker consumes as Celery would.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.holder: Holder | None = None
        settings: Settings = c.app.conf.identity_settings
        names = list(c.app.amqp.queues.consume_from)
        partition = (
            partition_of_queue(names[0], settings.identity_partitions) if len(names) == 1 else None
        )
        self.partition = partition
        if partition is None or not settings.sqlalchemy_url.startswith("postgresql"):
            return
        # Start without the queue: the holder adds it once the lease is ours.
        c.app.amqp.queues.deselect(queue_name(partition))
        shared().token.value = NOT_OWNER

    def start(self, c: Any) -> None:
        if self.partition is None or self.holder is not None:
            return
        settings: Settings = c.app.conf.identity_settings
        if not settings.sqlalchemy_url.startswith("postgresql"):
            return
        queue = queue_name(self.partition)
        wait_s = max(1.0, settings.partition_lease_s / 2)

        def sync() -> None:  # reads the holder's state when it runs, not when scheduled
            holder = self.holder
            _sync_consumer(c, queue, holder is not None and holder.consume)

        self.holder = Holder(
            settings,
            self.partition,
            owner_id(c.hostname),
            start_consuming=lambda: _run_in_loop(c, sync, wait_s),
            stop_consuming=lambda: _run_in_loop(c, sync, wait_s),
            resync=lambda: c.call_soon(sync),
        )
        self.holder.start()

    def shutdown(self, c: Any) -> None:
        if self.holder is not None:
            # A warm shutdown lets the running task finish: give the lease up after it
            # (bounded), so that the standby does not re-apply a batch about to commit.
            deadline = time.monotonic() + 2 * self.holder.lease_s
            while worker_state.active_requests and time.monotonic() < deadline:
                time.sleep(0.05)
            self.holder.stop()
            self.holder = None


def wait_until_not_consuming(timeout_s: float) -> bool:
    """In the pool child: until the main process stopped consuming (bounded)."""
    deadline = time.monotonic() + timeout_s
    while shared().consuming.value and time.monotonic() < deadline:
        time.sleep(0.05)
    return not shared().consuming.value
