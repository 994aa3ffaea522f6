"""Reads of the graph and the change feed: parse, call one domain read, answer.

None of these writes the graph; ``GET /changes`` numbers committed changes first
(``identity.feed.changes.sequence_pending``), which is bookkeeping of the feed only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import Blueprint, abort, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import Connection

from api import schemas
from api.auth import role
from api.errors import error_response
from api.routes import IDENTIFIERS_400, BadRequestBody, read_identifiers
from api.spec import PERSON_ID, QUERY_400, operation
from identity.feed import changes as feed
from identity.graph import reads
from identity.storage.db import run_in_transaction, run_snapshot
from identity.storage.replica import ReadRoute

T = TypeVar("T")

bp = Blueprint("graph", __name__)

MAX_CHANGES_PER_PAGE = 1000
#: The link and the edge the OpenAPI examples of /graph and /why share.
_LINK_EXAMPLE = {
    "email": "george@hillvalley.edu",
    "phoneNumber": "717171",
    "createdAt": "2026-11-30T10:02:00+00:00",
    "cause": "3f1c9a",
}
_EDGE_EXAMPLE = {"a": 1, "b": 2, "via": "link", "link": _LINK_EXAMPLE}
MAX_SEQ = 2**63 - 1


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


def _read_person(contact_id: int, read: Callable[[Connection], T | None]) -> T:
    """A read about the person of ``contact_id`` on one snapshot; a JSON 404 (through the
    one error edge) when no live contact has that id (an id past 32 bits names none and
    never reaches the database)."""
    _only_args()
    found = _read(read) if contact_id <= MAX_ID else None
    if found is None:
        abort(404, description=f"no live contact has the id {contact_id}")
    return found


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
    examples={
        "request": {"phoneNumber": "717171"},
        200: {
            "persons": [
                {
                    "primaryContactId": 1,
                    "emails": ["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
                    "phoneNumbers": ["919191", "717171"],
                    "secondaryContactIds": [2],
                }
            ]
        },
        400: {
            "error": "email must look like an address: a local part, one @, a domain",
            "field": "email",
        },
    },
    summary="Find the persons holding an email or a phone, writing nothing",
    body=schemas.IdentifyRequest,
    ok=schemas.LookupResponse,
    ok_description="Every person holding the email or the phone; `[]` when none.",
    errors={400: IDENTIFIERS_400},
)
def lookup() -> ResponseReturnValue:
    identifiers = read_identifiers()
    views = _read(lambda conn: reads.lookup(conn, identifiers))
    return jsonify({"persons": [v.to_json()["contact"] for v in views]})


@bp.get("/persons/<int:contact_id>")
@operation(
    id="getPerson",
    examples={
        200: {
            "contact": {
                "primaryContactId": 1,
                "emails": ["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
                "phoneNumbers": ["919191", "717171"],
                "secondaryContactIds": [2],
            }
        },
        400: {"error": "a must be an integer"},
        404: {"error": "no live contact has the id 42"},
    },
    summary="The person of any of its contacts",
    ok=schemas.IdentifyResponse,
    ok_description="The person, as /identify answers it.",
    errors={400: QUERY_400, 404: "No live contact has that id."},
    path={"contact_id": PERSON_ID},
)
def person(contact_id: int) -> ResponseReturnValue:
    view = _read_person(contact_id, lambda conn: reads.person(conn, contact_id))
    return jsonify(view.to_json())


@bp.get("/persons/<int:contact_id>/graph")
@operation(
    id="getPersonGraph",
    examples={
        200: {
            "primaryContactId": 1,
            "contacts": [
                {
                    "id": 1,
                    "email": "george@hillvalley.edu",
                    "phoneNumber": "919191",
                    "linkPrecedence": "primary",
                    "linkedId": None,
                    "createdAt": "2026-11-30T10:00:00+00:00",
                },
                {
                    "id": 2,
                    "email": "biffsucks@hillvalley.edu",
                    "phoneNumber": "717171",
                    "linkPrecedence": "secondary",
                    "linkedId": 1,
                    "createdAt": "2026-11-30T10:01:00+00:00",
                },
            ],
            "links": [_LINK_EXAMPLE],
            "edges": [_EDGE_EXAMPLE],
            "truncated": False,
            "totalContacts": 2,
            "limit": 200,
        },
        400: {"error": "a must be an integer"},
        404: {"error": "no live contact has the id 42"},
    },
    summary="How the person holds together: contacts, links and edges",
    ok=schemas.PersonGraph,
    ok_description="Bounded: past GRAPH_LIMIT contacts, the nearest to the primary, and"
    " `truncated`.",
    errors={400: QUERY_400, 404: "No live contact has that id."},
    path={"contact_id": PERSON_ID},
)
def person_graph(contact_id: int) -> ResponseReturnValue:
    limit = _settings().graph_limit
    graph = _read_person(contact_id, lambda conn: reads.person_graph(conn, contact_id, limit=limit))
    return jsonify(graph.to_json())


@bp.get("/persons/<int:contact_id>/why")
@operation(
    id="whyLinked",
    examples={
        200: {
            "primaryContactId": 1,
            "contactIds": [1, 2],
            "edges": [_EDGE_EXAMPLE],
        },
        400: {"error": "a must be an integer"},
        404: {"error": "contacts 1 and 9 are not both live contacts of the person of 1"},
        422: {
            "error": "the person has 60000 contacts, more than 50000: erase the value that glued"
            " it first"
        },
    },
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
        path = _read(lambda conn: reads.why(conn, contact_id, a, b))
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
    examples={
        200: {
            "primaryContactId": 1,
            "changes": [
                {
                    "seq": 3,
                    "kind": "person.merged",
                    "at": "2026-11-30T10:02:00+00:00",
                    "cause": "3f1c9a",
                    "payload": {
                        "primaryContactId": 1,
                        "absorbedPrimaryIds": [2],
                        "movedContactIds": [2],
                    },
                }
            ],
            "truncated": False,
        },
        400: {"error": "a must be an integer"},
        404: {"error": "no live contact has the id 42"},
    },
    summary="The changes that built this person, oldest first",
    ok=schemas.History,
    ok_description="At most HISTORY_LIMIT changes.",
    errors={400: QUERY_400, 404: "No live contact has that id."},
    path={"contact_id": PERSON_ID},
)
def history(contact_id: int) -> ResponseReturnValue:
    limit = _settings().history_limit
    root, changes = _read_person(
        contact_id, lambda conn: reads.history(conn, contact_id, limit=limit)
    )
    return jsonify(
        {
            "primaryContactId": root,
            "changes": [c.to_json() for c in changes[:limit]],
            "truncated": len(changes) > limit,
        }
    )


@bp.get("/changes")
@operation(
    id="listChanges",
    examples={
        200: {
            "changes": [
                {
                    "seq": 3,
                    "kind": "person.merged",
                    "at": "2026-11-30T10:02:00+00:00",
                    "cause": "3f1c9a",
                    "payload": {
                        "primaryContactId": 1,
                        "absorbedPrimaryIds": [2],
                        "movedContactIds": [2],
                    },
                }
            ],
            "next": 3,
        },
        400: {"error": "a must be an integer"},
        410: {
            "error": "changes after this seq were pruned; the oldest kept is 1200",
            "oldestSeq": 1200,
        },
    },
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
        "after": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEQ,
            "default": 0,
            "description": "The last seq already seen.",
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_CHANGES_PER_PAGE, "default": 100},
    },
)
def changes() -> ResponseReturnValue:
    _only_args("after", "limit")
    after = _int_arg("after", 0, 0, MAX_SEQ)
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
@operation(
    id="whoAmI",
    examples={200: {"role": "read"}},
    summary="What the caller's key may do",
    ok=schemas.WhoAmI,
    ok_description="open: no keys configured (development); read: an API_KEYS key; admin: an"
    " ADMIN_API_KEYS key.",
    unavailable=False,
)
def whoami() -> ResponseReturnValue:
    """What the caller's key may do: ``open`` (no keys configured), ``read`` or ``admin``."""
    return jsonify({"role": role()})
