"""``POST /erasures`` (admin key): parse, call ``identity.erasure.services.erase``, answer."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api import schemas
from api.auth import admin_only
from api.observability import request_id
from api.routes import BadRequestBody, read_body
from api.schemas import ErasureRequest
from api.spec import operation
from identity.erasure.services import ErasureRequest as ErasureRequest_
from identity.erasure.services import erase
from identity.normalize import normalize_email, normalize_phone, phone_spellings
from identity.storage.db import run_in_transaction

bp = Blueprint("erasure", __name__)

SELECTORS = ("email", "phoneNumber", "personId")


def parse_erasure(body: ErasureRequest, region: str | None) -> ErasureRequest_:
    given = [s for s in SELECTORS if getattr(body, s) is not None]
    if len(given) != 1:
        raise BadRequestBody(
            "give exactly one of email, phoneNumber or personId"
            + (f" (got {', '.join(given)})" if given else ""),
            field=given[1] if len(given) > 1 else None,
        )
    selector, suppress, dry_run = given[0], body.suppress, body.dryRun
    expected = body.expectedPrimaryContactId
    if expected is not None and selector != "personId":
        raise BadRequestBody(
            "expectedPrimaryContactId goes with personId", field="expectedPrimaryContactId"
        )
    if selector == "email":
        email = normalize_email(body.email)
        if email is None:
            raise BadRequestBody("email is empty", field="email")
        return ErasureRequest_(emails=frozenset({email}), suppress=suppress, dry_run=dry_run)
    if selector == "phoneNumber":
        if normalize_phone(body.phoneNumber, region) is None:
            raise BadRequestBody("phoneNumber is empty", field="phoneNumber")
        spellings = frozenset(phone_spellings(body.phoneNumber, region))
        return ErasureRequest_(phones=spellings, suppress=suppress, dry_run=dry_run)
    return ErasureRequest_(
        person_id=body.personId, suppress=suppress, dry_run=dry_run, expected_primary_id=expected
    )


@bp.post("/erasures")
@operation(
    id="erase",
    summary="Erase a value or a whole person; the clusters that held it are recomputed",
    body=ErasureRequest,
    ok=schemas.ErasureResponse,
    ok_description="What went, and the persons that remain (a value nobody holds: zeros).",
    errors={
        400: "Not exactly one selector, an unknown field, a wrong type or a value that does"
        " not normalize.",
        404: "personId names no live contact.",
        409: "expectedPrimaryContactId no longer matches the person.",
        422: "suppress without SUPPRESSION_HASH_KEY, or a person too large to erase whole.",
    },
    examples={
        200: {
            "erased": {"contacts": 1, "links": 1, "events": 0},
            "persons": [
                {
                    "primaryContactId": 1,
                    "emails": ["a@shop.test"],
                    "phoneNumbers": [],
                    "secondaryContactIds": [],
                },
                {
                    "primaryContactId": 2,
                    "emails": ["b@shop.test"],
                    "phoneNumbers": ["5550002"],
                    "secondaryContactIds": [],
                },
            ],
            "dryRun": False,
        },
        400: {
            "error": "give exactly one of email, phoneNumber or personId (got email, phoneNumber)",
            "field": "phoneNumber",
        },
        404: {"error": "no live contact has the id 42"},
        409: {
            "error": "the person of contact 7 is now under primary 3, not 7:"
            " look again before erasing"
        },
        422: {
            "error": "suppress needs SUPPRESSION_HASH_KEY: set it (a long random secret, kept"
            " outside the database) to keep suppressed values' hashes"
        },
        "request": {"email": "biffsucks@hillvalley.edu", "dryRun": True},
    },
)
def erasures() -> ResponseReturnValue:
    settings = current_app.extensions["identity.settings"]
    request_ = parse_erasure(read_body(ErasureRequest), settings.default_phone_region)
    key = settings.suppression_hash_key.get()
    cause = request_id()
    result = run_in_transaction(
        current_app.extensions["identity.engine"],
        lambda conn: erase(conn, request_, configured_key=key, cause=cause),
        attempts=settings.db_retry_attempts,
    )
    return jsonify(result.to_json())


admin_only("erasure.erasures")
