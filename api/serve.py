"""The default server: ``python -m api.serve`` runs the same Flask app under granian.

Chosen by measurement (docs/DECISIONS.md, "The WSGI server"): on this project's 2-core
bench, the same app served the /identify mix at about 1.5x the requests per second of
gunicorn's gthread workers, with less server CPU per request; the HTTP parsing, the
keep-alive connections and the thread hand-off run in Rust instead of Python.

Everything the app does is the app's: request ids, strict JSON, error bodies, logs,
metrics. This file only does what gunicorn.conf.py does for gunicorn, which keeps
working (``gunicorn -c gunicorn.conf.py 'api:create_app()'``):

- bind ``BIND_HOST:PORT`` from Settings; ``WEB_CONCURRENCY`` processes (default: the
  cores) of ``WEB_THREADS`` threads each (default 4: at 32 clients, 4 threads halved the
  p99 of 8 at the same requests/s, docs/DECISIONS.md);
- one Prometheus multiprocess directory for all workers, emptied at start (GET /metrics
  adds the workers' counters up), removed at exit when this process made it;
- the server's own log lines through the app's formatter (JSON, personal data
  redacted); no access log from the server (the app writes one line per request);
- the "embedded SQLite" warning said once, here, not by every worker.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile

from identity.settings import Settings

log = logging.getLogger(__name__)


def _metrics_dir() -> str | None:
    """Set PROMETHEUS_MULTIPROC_DIR before any worker imports prometheus_client; return it
    when this process made it (and must remove it)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        for path in glob.glob(os.path.join(given, "*.db")):
            os.remove(path)
        return None
    made = tempfile.mkdtemp(prefix="identity-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def log_config(settings: Settings) -> dict[str, object]:
    """granian's loggers through the app's formatter and handler (as gunicorn.conf.py)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"app": {"()": "identity.logs.make_formatter", "settings": settings}},
        "handlers": {"stderr": {"class": "identity.logs.StderrHandler", "formatter": "app"}},
        "loggers": {
            "_granian": {"level": settings.log_level, "handlers": ["stderr"], "propagate": False},
            "granian.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
    }


def main() -> int:
    import granian
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    from api.observability import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    owned = _metrics_dir()
    # create_app skips its "embedded database" warning in a worker whose parent said it.
    os.environ["SERVER_SOFTWARE"] = f"granian/{granian.__version__}"
    if settings.embedded:
        log.warning(
            "DATABASE_URL is not set: using the embedded SQLite database %s",
            settings.safe_database_url,
        )
    server = Server(
        "api:create_app",
        factory=True,
        interface=Interfaces.WSGI,
        address=settings.bind_host,
        port=settings.port,
        workers=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1)),
        blocking_threads=int(os.environ.get("WEB_THREADS", 4)),
        websockets=False,
        log_level=LogLevels(settings.log_level.lower()),
        log_dictconfig=log_config(settings),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=10,
    )
    try:
        server.serve()
    finally:
        if owned:
            shutil.rmtree(owned, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
