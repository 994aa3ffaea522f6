"""The Celery app's delivery settings (docs/ASYNC.md, "Delivery guarantees")."""

from __future__ import annotations

import pytest

from identity.events.messages import APPLY_EVENTS_TASK
from identity.settings import Secret, Settings
from worker import app
from worker.app import create_celery
from worker.partition import main as partition_main
from worker.partition import worker_argv


def test_delivery_settings() -> None:
    celery = create_celery(Settings(redis_url=Secret("redis://h:6379/3"), identity_partitions=3))
    conf = celery.conf
    assert conf.broker_url == "redis://h:6379/3"
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    assert conf.worker_send_task_events and conf.task_send_sent_event
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.result_backend_transport_options["visibility_timeout"] == visibility
    assert conf.task_time_limit * 10 <= visibility  # far below: no second delivery of a live task
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert [q.name for q in conf.task_queues] == ["identity.p0", "identity.p1", "identity.p2"]


def test_the_task_has_its_stable_name_and_is_idempotent_safe() -> None:
    task = app.tasks[APPLY_EVENTS_TASK]
    assert APPLY_EVENTS_TASK == "identity.apply_events"
    assert task.acks_late and task.reject_on_worker_lost and task.ignore_result


def test_partition_worker_command() -> None:
    argv = worker_argv(2, Settings(identity_partitions=4))
    assert argv[:3] == ["-A", "worker", "worker"]
    assert argv[argv.index("--queues") + 1] == "identity.p2"
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"
    assert "--task-events" in argv


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["x"], {"REDIS_URL": "redis://h"}, "usage"),
        (["4"], {"REDIS_URL": "redis://h", "IDENTITY_PARTITIONS": "4"}, "does not exist"),
        (["0"], {}, "REDIS_URL is not set"),
    ],
)
def test_partition_worker_refuses_bad_starts(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], message: str
) -> None:
    for name in ("REDIS_URL", "IDENTITY_PARTITIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir("/")  # no .env
    with pytest.raises(SystemExit) as refused:
        partition_main(args)
    assert message in str(refused.value)
