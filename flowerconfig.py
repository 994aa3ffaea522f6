"""Flower's configuration (``celery -A worker flower`` reads ./flowerconfig.py).

Flower can shut workers down, resize their pools and revoke tasks, and shows task ids,
timings and errors (a task's arguments only as a count: ``worker.app.args_repr``): it
refuses to start without FLOWER_BASIC_AUTH (``user:password``, comma-separated for
several users).
"""

from identity.settings import Settings

_settings = Settings.from_env()
if not _settings.flower_basic_auth:
    raise SystemExit(
        "flower: FLOWER_BASIC_AUTH is not set (user:password); Flower controls the workers"
        " and does not start without authentication"
    )
if ":" not in _settings.flower_basic_auth.get():
    raise SystemExit("flower: FLOWER_BASIC_AUTH must be user:password")

basic_auth = [pair.strip() for pair in _settings.flower_basic_auth.get().split(",") if pair.strip()]
port = _settings.flower_port
address = _settings.bind_host
# Keep the dashboard's memory bounded under millions of events.
max_tasks = 10000
purge_offline_workers = 300
