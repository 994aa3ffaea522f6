"""Reads of the graph and the change feed: parse, call one domain read, answer.

None of these writes the graph; ``GET /changes`` numbers committed changes first
(``identity.feed.changes.sequence_pending``), which is bookkeeping of the feed only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import Connection

from api.auth import role
from api.errors import error_response
from api.routes import BadRequestBody, read_identifiers
from identity.feed import changes as feed
from identity.graph import reads
from identity.storage.db import run_in_transaction, run_snapshot
from identity.storage.replica import ReadRoute

bp = Blueprint("graph", __name__)
T = TypeVar("T")

MAX_CHANGES_PER_PAGE = 1000


def _engine() -> Any:
    return current_app.extensions["identity.engine"]


def _read(work: Callable[[Connection], T]) -> T:
    """A read-only snapshot on the read replica when one is configured and fresh
    (identity.storage.replica), else on the primary; ``X-Read-From: primary`` asks for
    the primary (read-your-writes)."""
    read_from = request.headers.get("X-Read-From")
    if read_from is not None:
        if read_from != "primary":
            raise BadRequestBody("X-Read-From must be 'primary' when given", field="X-Read-From")
        return run_snapshot(_engine(), work)
    route: ReadRoute = current_app.extensions["identity.reads"]
    return route.run(work)


def _settings() -> Any:
    return current_app.extensions["identity.settings"]


#: Contact ids are 32-bit; a larger id names no contact (and never reaches the database).
MAX_ID = 2**31 - 1


def _not_found(contact_id: int) -> ResponseReturnValue:
    return error_response(404, f"no live contact has the id {contact_id}")


def _int_arg(name: str, default: int | None, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise BadRequestBody(f"query parameter {name} is required", field=name)
        return default
    if len(request.args.getlist(name)) > 1:
        raise BadRequestBody(f"query parameter {name} is given twice", field=name)
    # Plain ASCII digits only: int() would also take " 7", "+7", "7_0" and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequestBody(f"{name} must be a non-negative integer", field=name)
    value = int(raw)
    if not minimum <= value <= maximum:
        raise BadRequestBody(f"{name} must be between {minimum} and {maximum}", field=name)
    return value


def _only_args(*allowed: str) -> None:
    unknown = sorted(set(request.args) - set(allowed))
    if unknown:
        raise BadRequestBody(f"unknown query parameter(s): {', '.join(unknown)}", field=unknown[0])


@bp.post("/lookup")
def lookup() -> ResponseReturnValue:
    identifiers = read_identifiers()
    views = _read(lambda conn: reads.lookup(conn, identifiers))
    return jsonify({"persons": [v.to_json()["contact"] for v in views]})


@bp.get("/persons/<int:contact_id>")
def person(contact_id: int) -> ResponseReturnValue:
    _only_args()
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    view = _read(lambda conn: reads.person(conn, contact_id))
    if view is None:
        return _not_found(contact_id)
    return jsonify(view.to_json())


@bp.get("/persons/<int:contact_id>/graph")
def person_graph(contact_id: int) -> ResponseReturnValue:
    _only_args()
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    limit = _settings().graph_limit
    graph = _read(lambda conn: reads.person_graph(conn, contact_id, limit=limit))
    if graph is None:
        return _not_found(contact_id)
    return jsonify(graph.to_json())


@bp.get("/persons/<int:contact_id>/why")
def why(contact_id: int) -> ResponseReturnValue:
    _only_args("a", "b")
    a = _int_arg("a", None, 0, MAX_ID)
    b = _int_arg("b", None, 0, MAX_ID)
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    try:
        path = _read(lambda conn: reads.why(conn, contact_id, a, b))
    except reads.ClusterTooLarge as error:
        return error_response(422, f"{error}: erase the value that glued it first")
    if path is None:
        return error_response(
            404, f"contacts {a} and {b} are not both live contacts of the person of {contact_id}"
        )
    return jsonify(path.to_json())


@bp.get("/persons/<int:contact_id>/history")
def history(contact_id: int) -> ResponseReturnValue:
    _only_args()
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    limit = _settings().history_limit
    found = _read(lambda conn: reads.history(conn, contact_id, limit=limit))
    if found is None:
        return _not_found(contact_id)
    root, changes = found
    return jsonify(
        {
            "primaryContactId": root,
            "changes": [c.to_json() for c in changes[:limit]],
            "truncated": len(changes) > limit,
        }
    )


@bp.get("/changes")
def changes() -> ResponseReturnValue:
    _only_args("after", "limit")
    after = _int_arg("after", 0, 0, 2**63 - 1)
    limit = _int_arg("limit", 100, 1, MAX_CHANGES_PER_PAGE)
    engine = _engine()
    if run_snapshot(engine, feed.has_pending):
        run_in_transaction(engine, feed.sequence_pending)
    _prune_now_and_then(engine)
    try:
        page = run_snapshot(engine, lambda conn: feed.read_after(conn, after=after, limit=limit))
    except feed.FeedGap as gap:
        return error_response(410, str(gap), oldestSeq=gap.oldest_seq)
    last = page[-1].seq if page else after
    return jsonify({"changes": [c.to_json() for c in page], "next": last})


#: When this process last pruned the feed (monotonic seconds); the relay prunes too, but
#: without Redis (the embedded default) nothing else would.
_last_prune = [float("-inf")]
PRUNE_EVERY_S = 3600.0


def _prune_now_and_then(engine: Any) -> None:
    days = _settings().changes_retention_days
    if days <= 0 or time.monotonic() - _last_prune[0] < PRUNE_EVERY_S:
        return
    _last_prune[0] = time.monotonic()
    older = timedelta(days=days)
    run_in_transaction(engine, lambda conn: feed.prune(conn, older_than=older))


@bp.get("/whoami")
def whoami() -> ResponseReturnValue:
    """What the caller's key may do: ``open`` (no keys configured), ``read`` or ``admin``."""
    return jsonify({"role": role()})
