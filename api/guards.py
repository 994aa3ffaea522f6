"""Guards for operators: ``GET /guards`` lists them; admins mark and clear generic values.

Every mark and clear is a change in the feed (``guard.marked`` / ``guard.cleared``), with
the guard's id and reason, never the value.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api import schemas
from api.auth import admin_only
from api.errors import error_response
from api.observability import request_id
from api.routes import BadRequestBody, read_body
from api.schemas import GuardMark
from api.spec import operation
from identity.guards import store
from identity.normalize import Identifiers, normalize_email, normalize_phone
from identity.storage.db import run_in_transaction, run_snapshot
from identity.storage.locking import identifier_keys, lock_keys

bp = Blueprint("guards", __name__)


def _policy() -> Any:
    return current_app.extensions["identity.guards"]


def _engine() -> Any:
    return current_app.extensions["identity.engine"]


@bp.get("/guards")
@operation(
    id="listGuards",
    examples={
        200: {
            "blocked": {"email": [".+@example\\.(com|org|net)"], "phoneNumber": ["(\\d)\\1{6,}"]},
            "generic": [
                {
                    "id": 1,
                    "field": "phoneNumber",
                    "value": "+14155550100",
                    "partners": 21,
                    "markedAt": "2026-11-30T10:00:00+00:00",
                }
            ],
            "suppressed": 0,
            "genericThreshold": 20,
            "note": "A generic mark is not retroactive.",
        }
    },
    summary="Blocked patterns, generic values, and the count of suppressed hashes",
    ok=schemas.Guards,
    ok_description="The guards in force.",
)
def list_guards() -> ResponseReturnValue:
    policy = _policy()

    def read(conn: Any) -> dict[str, Any]:
        return {
            "blocked": policy.blocked_listing(),
            "generic": store.list_generic(conn),
            "suppressed": store.count_suppressed(conn),
            "genericThreshold": policy.generic_threshold,
            "note": (
                "A generic mark is not retroactive: contacts the value glued before it was"
                " marked stay one person until the value is erased (POST /erasures)."
            ),
        }

    return jsonify(run_snapshot(_engine(), read))


@bp.post("/guards/generic")
@operation(
    id="markGeneric",
    examples={
        "request": {"phoneNumber": "+14155550100"},
        201: {
            "guard": {
                "id": 1,
                "field": "phoneNumber",
                "value": "+14155550100",
                "partners": 21,
                "markedAt": "2026-11-30T10:00:00+00:00",
            }
        },
        400: {"error": "give exactly one of email or phoneNumber"},
        409: {"error": "that phoneNumber is generic already", "field": "phoneNumber"},
    },
    summary="Mark a value generic by hand (admin)",
    body=GuardMark,
    status=201,
    ok=schemas.GuardMarked,
    ok_description="Marked; recorded in the feed as guard.marked (without the value).",
    errors={
        400: "Not exactly one of email or phoneNumber, or a value that does not normalize.",
        409: "The value is generic already.",
    },
)
def mark_generic() -> ResponseReturnValue:
    body = read_body(GuardMark)
    given = [k for k in ("email", "phoneNumber") if getattr(body, k) is not None]
    if len(given) != 1:
        raise BadRequestBody("give exactly one of email or phoneNumber")
    region = current_app.extensions["identity.settings"].default_phone_region
    if given[0] == "email":
        email = normalize_email(body.email)
        identifiers = Identifiers(email=email, phone=None)
        value = ("e", email)
    else:
        phone = normalize_phone(body.phoneNumber, region)
        identifiers = Identifiers(email=None, phone=phone)
        value = ("p", phone)
    if value[1] is None:
        raise BadRequestBody(f"{given[0]} is empty", field=given[0])
    cause = request_id()

    def work(conn: Any) -> dict[str, Any] | None:
        lock_keys(conn, identifier_keys(identifiers))
        try:
            return store.mark_by_operator(conn, _policy(), value, cause)  # type: ignore[arg-type]
        except store.AlreadyGeneric:
            return None

    guard = run_in_transaction(_engine(), work)
    if guard is None:
        return error_response(409, f"that {given[0]} is generic already", field=given[0])
    return jsonify({"guard": guard}), 201


@bp.delete("/guards/generic/<int:guard_id>")
@operation(
    id="clearGeneric",
    examples={404: {"error": "no generic value has the guard id 9"}},
    summary="Clear a generic mark (admin): the value may gain GENERIC_THRESHOLD more partners",
    status=204,
    ok=None,
    ok_description="Cleared; recorded in the feed as guard.cleared.",
    errors={404: "No generic value has that guard id."},
)
def clear_generic(guard_id: int) -> ResponseReturnValue:
    cause = request_id()
    if guard_id > 2**63 - 1 or not run_in_transaction(
        _engine(), lambda conn: store.clear_generic(conn, guard_id, cause)
    ):
        return error_response(404, f"no generic value has the guard id {guard_id}")
    return "", 204


admin_only("guards.mark_generic")
admin_only("guards.clear_generic")
