"""HTTP entry point: parses input, calls the domain, maps errors. No rules live here."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response
from werkzeug.serving import is_running_from_reloader

from identity.guards.policy import GuardPolicy
from identity.settings import Settings
from identity.storage.db import create_db_engine
from identity.storage.replica import ReadRoute

log = logging.getLogger(__name__)


class BufferedResponse(Response):
    """A body already in memory goes to the server as a one-item list, not an iterator.

    The WSGI server then sends it in one call; granian otherwise pulls the chunks of
    Werkzeug's ``ClosingIterator`` one by one through the GIL, which py-spy showed as the
    largest single line of a served request's Python time (docs/DECISIONS.md). A body
    that is not a sequence (a file, a generator) is streamed as before.
    """

    def get_app_iter(self, environ: Any) -> Iterable[bytes]:
        app_iter = super().get_app_iter(environ)
        if not self.is_sequence:
            return app_iter
        try:
            return [b"".join(app_iter)]
        finally:
            app_iter.close()  # type: ignore[attr-defined]


def _as_is(func: Any) -> Any:
    """Flask's ``ensure_sync`` for an app without coroutine views or hooks (a test checks
    that every registered one is a plain function)."""
    return func


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app for ``settings`` (read from the environment when omitted)."""
    settings = settings or Settings.from_env()
    from api import observability

    observability.configure_logging(settings)
    app = Flask(__name__)
    app.response_class = BufferedResponse
    # No view or hook is a coroutine: skip Flask's per-call check for one (it inspected
    # every hook and the view on every request, ~5% of a lookup's CPU under cProfile).
    app.ensure_sync = _as_is  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep SPEC.md's field order
    app.extensions["identity.settings"] = settings
    app.extensions["identity.engine"] = create_db_engine(settings)
    replica_url = settings.replica_sqlalchemy_url
    app.extensions["identity.reads"] = ReadRoute(
        app.extensions["identity.engine"],
        create_db_engine(settings, url=replica_url) if replica_url else None,
        max_lag_ms=settings.replica_max_lag_ms,
    )
    app.extensions["identity.guards"] = GuardPolicy.from_settings(settings)
    if settings.embedded and not _parent_said_it():
        log.warning(
            "DATABASE_URL is not set: using the embedded SQLite database %s",
            settings.safe_database_url,
        )

    from api import (
        auth,
        erasures,
        errors,
        events,
        graph,
        guards,
        metrics,
        openapi,
        routes,
        spec,
        ui,
    )

    observability.register(app)  # first: every later hook and log line has the request id
    auth.register(app, settings)
    metrics.register(app)
    errors.register(app)
    app.register_blueprint(routes.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(graph.bp)
    app.register_blueprint(erasures.bp)
    app.register_blueprint(guards.bp)
    app.register_blueprint(ui.bp)
    spec.check_answers(app)
    return app


def _parent_said_it() -> bool:
    """True in a process whose parent already said which database the server uses.

    gunicorn's master says it before it forks its workers (gunicorn.conf.py
    ``on_starting``), and sets ``SERVER_SOFTWARE`` for them; so does ``python -m api.serve``
    (granian); the development server's reloader loads the app itself before it starts
    the child that serves.
    """
    return os.environ.get("SERVER_SOFTWARE", "").startswith(("gunicorn/", "granian/")) or (
        is_running_from_reloader()
    )
