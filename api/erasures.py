"""``POST /erasures`` (admin key): parse, call ``identity.erasure.services.erase``, answer."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.auth import admin_only
from api.observability import request_id
from api.routes import BadRequestBody, read_object
from identity.db import run_in_transaction
from identity.erasure.services import ErasureRequest, erase
from identity.normalize import normalize_email, normalize_phone, phone_spellings

bp = Blueprint("erasure", __name__)

SELECTORS = ("email", "phoneNumber", "personId")
FIELDS = frozenset({*SELECTORS, "suppress", "dryRun", "expectedPrimaryContactId"})
MAX_ID = 2**31 - 1


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequestBody(f"{name} must be true or false", field=name)
    return value


def _contact_id(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise BadRequestBody(f"{name} must be a contact id (a positive integer)", field=name)
    return value


def parse_erasure(body: dict[str, Any], region: str | None) -> ErasureRequest:
    given = [s for s in SELECTORS if body.get(s) is not None]
    if len(given) != 1:
        raise BadRequestBody(
            "give exactly one of email, phoneNumber or personId"
            + (f" (got {', '.join(given)})" if given else ""),
            field=given[1] if len(given) > 1 else None,
        )
    selector = given[0]
    suppress, dry_run = _flag(body, "suppress"), _flag(body, "dryRun")
    expected = _contact_id(body, "expectedPrimaryContactId")
    if expected is not None and selector != "personId":
        raise BadRequestBody(
            "expectedPrimaryContactId goes with personId", field="expectedPrimaryContactId"
        )
    if selector == "email":
        email = normalize_email(body["email"])
        if email is None:
            raise BadRequestBody("email is empty", field="email")
        return ErasureRequest(emails=frozenset({email}), suppress=suppress, dry_run=dry_run)
    if selector == "phoneNumber":
        if normalize_phone(body["phoneNumber"], region) is None:
            raise BadRequestBody("phoneNumber is empty", field="phoneNumber")
        spellings = frozenset(phone_spellings(body["phoneNumber"], region))
        return ErasureRequest(phones=spellings, suppress=suppress, dry_run=dry_run)
    person = _contact_id(body, "personId")
    return ErasureRequest(
        person_id=person, suppress=suppress, dry_run=dry_run, expected_primary_id=expected
    )


@bp.post("/erasures")
def erasures() -> ResponseReturnValue:
    settings = current_app.extensions["identity.settings"]
    request_ = parse_erasure(read_object(FIELDS), settings.default_phone_region)
    key = settings.suppression_hash_key.get()
    cause = request_id()
    result = run_in_transaction(
        current_app.extensions["identity.engine"],
        lambda conn: erase(conn, request_, configured_key=key, cause=cause),
        attempts=settings.db_retry_attempts,
    )
    return jsonify(result.to_json())


admin_only("erasure.erasures")
