"""Routes: parse, call one domain service, answer."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from api import schemas
from api.observability import request_id
from api.schemas import IdentifyRequest
from api.spec import operation
from identity.errors import InvalidInput, Unavailable
from identity.graph import services
from identity.guards.policy import AllIgnored
from identity.normalize import Identifiers, normalize_identifiers
from identity.storage.db import run_in_transaction, run_read_only
from identity.validation import Model, check

bp = Blueprint("identity", __name__)


class BadRequestBody(InvalidInput):
    pass


def _reject_constant(name: str) -> Any:
    raise BadRequestBody(f"request body is not valid JSON: {name} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequestBody(f"request body has the key {key!r} twice")
        result[key] = value
    return result


def read_json_body() -> Any:
    """The request's JSON, strictly: JSON content type, UTF-8, no NaN, no duplicate keys."""
    req = request._get_current_object()  # one context lookup, not one per attribute
    if req.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    limit = req.max_content_length  # the app's, or the route's own (/events)
    length = req.content_length
    if length is not None:
        if limit is not None and length > limit:
            raise RequestEntityTooLarge()
        # The body's declared length, straight from the server's input: Werkzeug's stream
        # wrappers (get_data) were a fifth of this function's CPU for the same bytes. A
        # client that sends fewer bytes gets a short body, which the JSON parser refuses.
        raw = req.environ["wsgi.input"].read(length) if length else b""
    else:
        raw = req.get_data(cache=False)
    if length is None and limit is not None and len(raw) >= limit:
        # A streamed (chunked) body has no length to check up front, and Werkzeug stops
        # reading it at exactly the limit without an error: never parse a cut-off body.
        raise RequestEntityTooLarge()
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequestBody("request body is not valid UTF-8") from None
    try:
        return json.loads(body, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise BadRequestBody("request body is nested too deeply") from None
    except ValueError as error:
        raise BadRequestBody(f"request body is not valid JSON: {error}") from None


def _engine() -> Any:
    return current_app.extensions["identity.engine"]


def _settings() -> Any:
    return current_app.extensions["identity.settings"]


def read_body(model: type[Model]) -> Model:
    """The request's JSON (strictly parsed) as ``model``: one place validates every body."""
    return check(model, read_json_body())


def read_identifiers() -> Identifiers:
    """The body of /identify and /lookup: an email and/or a phone, normalized."""
    body = read_body(IdentifyRequest)
    return normalize_identifiers(body.email, body.phoneNumber, _settings().default_phone_region)


#: The 400 of /identify and /lookup.
IDENTIFIERS_400 = (
    "Not a JSON object, a wrong type, an unknown field, an identifier that does not normalize,"
    " or neither identifier present. `field` names the offending field when there is one."
)
LORRAINE = {
    "primaryContactId": 1,
    "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
    "phoneNumbers": ["123456"],
    "secondaryContactIds": [23],
}


@bp.post("/identify")
@operation(
    id="identify",
    summary="Reconcile one email/phone pair and answer with its whole cluster",
    body=IdentifyRequest,
    ok=schemas.IdentifyResponse,
    ok_description="The cluster holding the request's identifiers, after this request's own"
    " change.",
    errors={
        400: IDENTIFIERS_400,
        422: "Every value of the request is ignored by a guard (blocked, generic or"
        " suppressed): nothing was written.",
    },
    examples={
        400: {
            "error": "email must look like an address: a local part, one @, a domain",
            "field": "email",
        },
        422: {
            "error": "every value of the request is ignored (blocked phoneNumber)",
            "field": "phoneNumber",
        },
        "request": {"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"},
        200: {"contact": LORRAINE},
    },
)
def identify() -> ResponseReturnValue:
    identifiers = read_identifiers()
    settings = _settings()
    engine = _engine()
    cause = request_id()
    # A repeat lookup is answered by one lock-free read; anything else, one transaction.
    policy = current_app.extensions["identity.guards"]
    view = run_read_only(
        engine, lambda conn: services.peek(conn, identifiers=identifiers, policy=policy)
    )
    if view is None:
        outcome = run_in_transaction(
            engine,
            lambda conn: services.identify(
                conn, identifiers=identifiers, peeked=True, cause=cause, policy=policy
            ),
            attempts=settings.db_retry_attempts,
            begin_in_first_message=True,
        )
        if isinstance(outcome, AllIgnored):
            raise outcome.error()  # after the commit: a generic mark it caused stays
        view = outcome
    return jsonify(view.to_json())


@bp.get("/healthz")
@operation(
    id="healthz",
    summary="Liveness and database reachability (never needs a key)",
    ok=schemas.Health,
    ok_description="Serving, and the database answers.",
    examples={200: {"status": "ok", "database": "postgresql"}},
)
def healthz() -> ResponseReturnValue:
    """Liveness and database reachability; never needs auth."""
    try:
        with _engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:  # any failure to reach the database is "unhealthy"
        raise Unavailable("database unreachable", reason="unreachable") from error
    return jsonify({"status": "ok", "database": _engine().dialect.name})
