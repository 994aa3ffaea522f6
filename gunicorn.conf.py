"""Production server settings for `gunicorn -c gunicorn.conf.py 'api:create_app()'`.

Read from the environment through the same Settings object as the app.
"""

import multiprocessing

from identity.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.bind_host}:{_settings.port}"
# gthread: a few processes, each with threads sharing one SQLAlchemy pool.
worker_class = "gthread"
workers = int(__import__("os").environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
threads = int(__import__("os").environ.get("WEB_THREADS", 8))
# A request never needs long: a slow one is a hung one.
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = None
# gunicorn 27 opens a control socket shared by every instance of the user; not needed.
control_socket_disable = True

# --- Logs: gunicorn's own lines in the app's format (JSON by default, PII redacted).
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"app": {"()": "identity.logs.make_formatter", "settings": _settings}},
    "handlers": {"stderr": {"class": "identity.logs.StderrHandler", "formatter": "app"}},
    # The root logger gets its handler from create_app (api.observability.configure_logging).
    "root": {"level": _settings.log_level, "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": _settings.log_level, "handlers": ["stderr"], "propagate": False}
    },
}

# --- Metrics: every worker process writes its counters to files in one directory, and
# GET /metrics adds them up (prometheus_client multiprocess mode). The variable must be
# set before any worker imports prometheus_client, hence here, in the master.
_metrics_dir_owned = False
if not __import__("os").environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile as _tempfile

    __import__("os").environ["PROMETHEUS_MULTIPROC_DIR"] = _tempfile.mkdtemp(
        prefix="identity-metrics-"
    )
    _metrics_dir_owned = True


def on_starting(server: object) -> None:
    """Say once, here in the master, what every worker would otherwise repeat; and start the
    counters from zero: drop the metrics files of a previous run."""
    import glob
    import os

    if _settings.embedded:  # the same words as create_app's, which the workers then skip
        server.log.warning(  # type: ignore[attr-defined]
            "DATABASE_URL is not set: using the embedded SQLite database %s",
            _settings.safe_database_url,
        )
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server: object, worker: object) -> None:
    """A dead worker's live gauges stop counting; its counters stay in the sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    if _metrics_dir_owned:
        import shutil

        shutil.rmtree(__import__("os").environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
