"""The Celery app, built from identity Settings (REDIS_URL, IDENTITY_PARTITIONS)."""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery import Celery, signals
from kombu import Queue
from sqlalchemy.engine import Engine

from identity.events.messages import queue_name
from identity.guards.policy import GuardPolicy
from identity.logs import configure_logging
from identity.settings import Settings
from identity.storage.db import create_db_engine
from worker.ownership import PartitionOwnership, forget_parent_engines

log = logging.getLogger(__name__)

#: A message a worker took and never acknowledged (it died) is handed out again after
#: this long by Redis. The task time limit stays far below it, so a slow task is
#: killed long before Redis could hand its message to a second worker.
VISIBILITY_TIMEOUT_S = 3600
TASK_TIME_LIMIT_S = 300
TASK_SOFT_TIME_LIMIT_S = 240
#: Producers (the relay, the Python publisher) fail fast when Redis is down; the
#: inbox keeps what they could not send.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2}


def args_repr(events: int) -> dict[str, str]:
    """What task events (Flower) and worker logs show of a message's arguments: a count,
    never the emails and phones. Celery's default is a repr of the arguments' first 1,024
    characters, built on every publish; every publish and retry passes this instead."""
    return {"argsrepr": f"[<{events} events>]", "kwargsrepr": "{}"}


def celery_config(settings: Settings) -> dict[str, Any]:
    transport: dict[str, Any] = {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        **settings.redis_transport_options,  # sentinel:// URLs: the service name
    }
    return {
        "broker_url": settings.redis_url.get() or "memory://",
        "broker_transport_options": transport,
        # No result backend (results are ignored); set anyway so that adding one
        # later cannot silently fall back to the 1 h default with other limits.
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": TASK_TIME_LIMIT_S,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT_S,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": 1,
        "worker_send_task_events": True,  # Flower
        "task_send_sent_event": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "task_queues": [Queue(queue_name(p)) for p in range(settings.identity_partitions)],
        "task_default_queue": queue_name(0),
        "task_create_missing_queues": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def create_celery(settings: Settings) -> Celery:
    celery = Celery("identity", set_as_current=False)
    celery.conf.update(celery_config(settings))
    celery.conf.identity_settings = settings
    return celery


app = create_celery(Settings.from_env())
app.set_default()
# One consumer per partition fleet-wide: the worker consumes its queue under a lease only.
app.steps["consumer"].add(PartitionOwnership)

_engine: Engine | None = None


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """The worker's lines as every process's (``identity.logs``): one JSON object a line
    (or text, ``LOG_FORMAT``), emails and phones replaced by keyed hashes. A receiver of
    this signal makes Celery leave logging alone: no handler of its own, and stdout and
    stderr not redirected into the log."""
    configure_logging(app.conf.identity_settings)


def get_policy() -> GuardPolicy:
    """The guards, built once per process from the settings (patterns compiled once)."""
    global _policy
    if _policy is None:
        _policy = GuardPolicy.from_settings(app.conf.identity_settings)
    return _policy


_policy: GuardPolicy | None = None


def get_engine() -> Engine:
    """The process's engine: built after fork (never inherited), lazily under --pool solo."""
    global _engine
    if _engine is None:
        settings: Settings = app.conf.identity_settings
        _engine = create_db_engine(settings, pool_size=1, max_overflow=1)
    return _engine


@signals.worker_init.connect
def _require_redis(**_: Any) -> None:
    if not app.conf.identity_settings.redis_url:
        raise SystemExit("worker: REDIS_URL is not set; without it events are applied in-process")


@signals.worker_process_init.connect
def _engine_after_fork(**_: Any) -> None:
    global _engine
    if _engine is not None:  # inherited from the parent: never share its sockets
        _engine.dispose(close=False)
    _engine = None
    forget_parent_engines()
    get_engine()


#: The collector's first threshold in a worker (Python's default is 700 allocations). A
#: 500-event batch allocates tens of thousands of short-lived tuples and sets, almost
#: none in cycles; at 700 the young collections (and the full ones they lead to) cost
#: ~15% of apply_events' Python time (docs/DECISIONS.md, "The event path").
GC_THRESHOLD0 = 50_000


@signals.worker_process_init.connect
def _tune_gc_after_fork(**_: Any) -> None:
    """Move what the process imported and built into the permanent generation (no full
    collection walks it again) and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD0, gen1, gen2)


@signals.worker_process_shutdown.connect
def _dispose_engine(**_: Any) -> None:
    global _engine
    if _engine is not None:
        _engine.dispose()
        _engine = None


# Register the tasks with this app.
import worker.tasks  # noqa: E402,F401
