"""API keys: with ``API_KEYS`` set, every endpoint but the open ones needs a bearer key.

Open: ``/healthz`` (load balancers), ``/openapi.json`` (the contract is public) and
``/metrics`` (aggregate counters only, no personal data; keep it off the public
network, see docs/OPERATIONS.md), and the explorer page's own files under ``/ui/``
(static HTML, JS and CSS; the data calls the page makes need a key like any client).
Everything else, today ``/identify`` and ``/events`` and any endpoint added later, is
closed by default.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from identity.settings import Settings

log = logging.getLogger(__name__)

#: Endpoints (Flask endpoint names) that never need a key.
OPEN_ENDPOINTS = frozenset(
    {"identity.healthz", "metrics.metrics", "openapi.document", "static"}
    # The explorer page's HTML, JS and CSS hold no data; the calls it makes need a key.
    | {"ui.root", "ui.index", "ui.asset"}
)
REALM = "identity-reconciliation"


def parse_keys(settings: Settings) -> list[bytes]:
    """``API_KEYS`` is comma-separated; blanks are ignored."""
    return [k.strip().encode() for k in settings.api_keys.get().split(",") if k.strip()]


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
    if not keys:
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
        if not key_matches(presented.strip().encode("utf-8", "surrogateescape"), keys):
            log.warning("rejected a request with an unknown API key")
            return _denied("the API key is not valid", "invalid_token")
        return None
