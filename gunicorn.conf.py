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
