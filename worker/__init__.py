"""Celery entry point for events: ``celery -A worker worker`` / ``celery -A worker flower``.

Thin by design: tasks parse JSON, call one domain service (identity.events.services)
and map failures to retries or dead letters. See docs/ASYNC.md.
"""

from worker.app import app

__all__ = ["app"]
