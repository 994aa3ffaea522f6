"""Reads of the graph and the change feed: parse, call one domain read, answer.

None of these writes the graph; ``GET /changes`` numbers committed changes first
(``identity.feed.changes.sequence_pending``), which is bookkeeping of the feed only.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from api import schemas
from api.auth import role
from api.errors import error_response
from api.routes import IDENTIFIERS_400, BadRequestBody, read_identifiers
from api.spec import PERSON_ID, QUERY_400, operation
from identity.db import run_in_transaction, run_snapshot
from identity.feed import changes as feed
from identity.graph import reads

bp = Blueprint("graph", __name__)

MAX_CHANGES_PER_PAGE = 1000
MAX_SEQ = 2**63 - 1


def _engine() -> Any:
    return current_app.extensions["identity.engine"]


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
@operation(
    id="lookup",
    summary="Find the persons holding an email or a phone, writing nothing",
    body=schemas.IdentifyRequest,
    ok=schemas.LookupResponse,
    ok_description="Every person holding the email or the phone; `[]` when none.",
    errors={400: IDENTIFIERS_400},
)
def lookup() -> ResponseReturnValue:
    identifiers = read_identifiers()
    views = run_snapshot(_engine(), lambda conn: reads.lookup(conn, identifiers))
    return jsonify({"persons": [v.to_json()["contact"] for v in views]})


@bp.get("/persons/<int:contact_id>")
@operation(
    id="getPerson",
    summary="The person of any of its contacts",
    ok=schemas.IdentifyResponse,
    ok_description="The person, as /identify answers it.",
    errors={400: QUERY_400, 404: "No live contact has that id."},
    path={"contact_id": PERSON_ID},
)
def person(contact_id: int) -> ResponseReturnValue:
    _only_args()
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    view = run_snapshot(_engine(), lambda conn: reads.person(conn, contact_id))
    if view is None:
        return _not_found(contact_id)
    return jsonify(view.to_json())


@bp.get("/persons/<int:contact_id>/graph")
@operation(
    id="getPersonGraph",
    summary="How the person holds together: contacts, links and edges",
    ok=schemas.PersonGraph,
    ok_description="Bounded: past GRAPH_LIMIT contacts, the nearest to the primary, and"
    " `truncated`.",
    errors={400: QUERY_400, 404: "No live contact has that id."},
    path={"contact_id": PERSON_ID},
)
def person_graph(contact_id: int) -> ResponseReturnValue:
    _only_args()
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    limit = _settings().graph_limit
    graph = run_snapshot(_engine(), lambda conn: reads.person_graph(conn, contact_id, limit=limit))
    if graph is None:
        return _not_found(contact_id)
    return jsonify(graph.to_json())


@bp.get("/persons/<int:contact_id>/why")
@operation(
    id="whyLinked",
    summary="Why two contacts are one person: the shortest chain of edges",
    ok=schemas.WhyPath,
    ok_description="The chain from a to b.",
    errors={
        400: QUERY_400,
        404: "a or b is not a live contact of this person.",
        422: "The person is too large to explain in one answer.",
    },
    path={"contact_id": PERSON_ID},
    query={
        "a": {"required": True, "type": "integer", "minimum": 0, "maximum": MAX_ID},
        "b": {"required": True, "type": "integer", "minimum": 0, "maximum": MAX_ID},
    },
)
def why(contact_id: int) -> ResponseReturnValue:
    _only_args("a", "b")
    a = _int_arg("a", None, 0, MAX_ID)
    b = _int_arg("b", None, 0, MAX_ID)
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    try:
        path = run_snapshot(_engine(), lambda conn: reads.why(conn, contact_id, a, b))
    except reads.ClusterTooLarge as error:
        return error_response(422, f"{error}: erase the value that glued it first")
    if path is None:
        return error_response(
            404, f"contacts {a} and {b} are not both live contacts of the person of {contact_id}"
        )
    return jsonify(path.to_json())


@bp.get("/persons/<int:contact_id>/history")
@operation(
    id="getPersonHistory",
    summary="The changes that built this person, oldest first",
    ok=schemas.History,
    ok_description="At most HISTORY_LIMIT changes.",
    errors={400: QUERY_400, 404: "No live contact has that id."},
    path={"contact_id": PERSON_ID},
)
def history(contact_id: int) -> ResponseReturnValue:
    _only_args()
    if contact_id > MAX_ID:
        return _not_found(contact_id)
    limit = _settings().history_limit
    found = run_snapshot(_engine(), lambda conn: reads.history(conn, contact_id, limit=limit))
    if found is None:
        return _not_found(contact_id)
    root, changes = found
    return jsonify(
        {
            "primaryContactId": root,
            "changes": [c.to_json() for c in changes],
            "truncated": len(changes) >= limit,
        }
    )


@bp.get("/changes")
@operation(
    id="listChanges",
    summary="The change feed: changes with seq > after, in seq order",
    ok=schemas.ChangePage,
    ok_description="A page of changes; a follower that passes `next` back as `after` never"
    " misses a change.",
    errors={
        400: QUERY_400,
        410: (
            "`after` is below what retention kept (CHANGES_RETENTION_DAYS): start over from a"
            " full read.",
            schemas.FeedGone,
        ),
    },
    query={
        "after": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ, "default": 0,
                  "description": "The last seq already seen."},
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_CHANGES_PER_PAGE,
                  "default": 100},
    },
)  # fmt: skip
def changes() -> ResponseReturnValue:
    _only_args("after", "limit")
    after = _int_arg("after", 0, 0, MAX_SEQ)
    limit = _int_arg("limit", 100, 1, MAX_CHANGES_PER_PAGE)
    engine = _engine()
    if run_snapshot(engine, feed.has_pending):
        run_in_transaction(engine, feed.sequence_pending)
    try:
        page = run_snapshot(engine, lambda conn: feed.read_after(conn, after=after, limit=limit))
    except feed.FeedGap as gap:
        return error_response(410, str(gap), oldestSeq=gap.oldest_seq)
    last = page[-1].seq if page else after
    return jsonify({"changes": [c.to_json() for c in page], "next": last})


@bp.get("/whoami")
@operation(
    id="whoAmI",
    summary="What the caller's key may do",
    ok=schemas.WhoAmI,
    ok_description="open: no keys configured (development); read: an API_KEYS key; admin: an"
    " ADMIN_API_KEYS key.",
    unavailable=False,
)
def whoami() -> ResponseReturnValue:
    """What the caller's key may do: ``open`` (no keys configured), ``read`` or ``admin``."""
    return jsonify({"role": role()})
