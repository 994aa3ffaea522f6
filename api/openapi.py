"""``GET /openapi.json``: the OpenAPI 3.1 document of the whole API.

The document is a static file kept next to the code (``api/openapi.json``);
``tests/api/test_openapi.py`` proves it matches the routes and that its
examples validate, and schemathesis fuzzes the app against it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response

bp = Blueprint("openapi", __name__)


@cache
def document() -> dict[str, Any]:
    text = resources.files("api").joinpath("openapi.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@cache
def _document_bytes() -> bytes:
    return json.dumps(document(), ensure_ascii=False).encode()


@bp.get("/openapi.json", endpoint="document")
def document_view() -> Response:
    return Response(_document_bytes(), mimetype="application/json")
