"""API keys: with ``API_KEYS`` or ``ADMIN_API_KEYS`` set, every endpoint but the open ones
needs a bearer key; endpoints that destroy or override (erasures, guard changes) need an
admin key (403 with a read key, and for everyone when only ``API_KEYS`` is set). An
admin key also reads. With no key at all the service is in open development mode.

Open: ``/healthz`` (load balancers), ``/openapi.json`` (the contract is public), ``/``
(the index of that contract), ``/metrics`` (aggregate counters only, no personal
data; keep it off the public network, see docs/OPERATIONS.md) and the explorer page's
own files under ``/ui/`` (static HTML, JS and CSS; the data calls the page makes need a
key like any client). Everything else, today ``/identify`` and ``/events`` and any
endpoint added later, is closed by default.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, g, jsonify, request
from flask.typing import ResponseReturnValue

from identity.settings import Settings

log = logging.getLogger(__name__)

#: Endpoints (Flask endpoint names) that never need a key.
OPEN_ENDPOINTS = frozenset(
    {"identity.healthz", "metrics.metrics", "openapi.document", "openapi.index", "static"}
    # The explorer page's HTML, JS and CSS hold no data; the calls it makes need a key.
    | {"ui.root", "ui.index", "ui.asset"}
)
REALM = "identity-reconciliation"


#: Endpoints that need an admin key whenever keys are configured.
ADMIN_ENDPOINTS: set[str] = set()

ROLE_OPEN, ROLE_READ, ROLE_ADMIN = "open", "read", "admin"


def admin_only(endpoint: str) -> None:
    """Mark a Flask endpoint (``blueprint.function``) as needing an admin key."""
    ADMIN_ENDPOINTS.add(endpoint)


def _split(raw: str) -> list[bytes]:
    return [k.strip().encode() for k in raw.split(",") if k.strip()]


def parse_keys(settings: Settings) -> list[bytes]:
    """``API_KEYS`` is comma-separated; blanks are ignored."""
    return _split(settings.api_keys.get())


def parse_admin_keys(settings: Settings) -> list[bytes]:
    return _split(settings.admin_api_keys.get())


def role() -> str:
    """The caller's role in this request: open (no keys configured), read or admin."""
    return str(g.get("identity_role", ROLE_OPEN))


def key_matches(presented: bytes, keys: list[bytes]) -> bool:
    """Constant-time against every key, whichever matches (no early exit)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


def _denied(message: str, error_code: str | None) -> ResponseReturnValue:
    challenge = f'Bearer realm="{REALM}"'
    if error_code:
        challenge += f', error="{error_code}"'
    return jsonify({"error": message}), 401, {"WWW-Authenticate": challenge}


def register(app: Flask, settings: Settings) -> None:
    keys = parse_keys(settings)
    admin_keys = parse_admin_keys(settings)
    if not keys and not admin_keys:
        return

    @app.before_request
    def _require_key() -> ResponseReturnValue | None:
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if not header:
            return _denied("an API key is required: send Authorization: Bearer <key>", None)
        if scheme.lower() != "bearer" or not presented.strip():
            return _denied("Authorization must be of the form: Bearer <key>", "invalid_request")
        given = presented.strip().encode("utf-8", "surrogateescape")
        is_admin = key_matches(given, admin_keys)
        is_reader = key_matches(given, keys)
        if not is_admin and not is_reader:
            log.warning("rejected a request with an unknown API key")
            return _denied("the API key is not valid", "invalid_token")
        g.identity_role = ROLE_ADMIN if is_admin else ROLE_READ
        if request.endpoint in ADMIN_ENDPOINTS and not is_admin:
            log.warning("refused an admin call to %s with a read key", request.endpoint)
            return jsonify({"error": "this call needs an admin key (ADMIN_API_KEYS)"}), 403
        return None
