"""``GET /openapi.json``: the OpenAPI 3.1 document of the whole API; ``GET /``: its index.

The document is a file kept next to the code (``api/openapi.json``), written by
``make openapi`` from the url map and the models (``api.spec``);
``tests/api/test_openapi.py`` proves it is what the generator makes, that it matches
the routes and that its examples validate, and schemathesis fuzzes the app against it.
The index lists the document's operations, so it cannot fall out of step with it either.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from api import schemas
from api.spec import operation

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
@operation(
    id="openapi",
    summary="This document",
    ok=None,
    ok_description="The OpenAPI 3.1 document of the whole API.",
    ok_schema={"type": "object", "required": ["openapi", "paths"]},
    unavailable=False,
)
def document_view() -> Response:
    return Response(_document_bytes(), mimetype="application/json")


#: The explorer page for people (SPEC.md, "The explorer page").
EXPLORER_PATH = "/ui/"


@bp.get("/", endpoint="index")
@operation(
    id="index",
    examples={
        200: {
            "service": "identity-reconciliation",
            "version": "0.1.0",
            "description": "Links every contact that shares an email or a phone into one person"
            " under its oldest contact.",
            "links": {
                "openapi": "/openapi.json",
                "health": "/healthz",
                "metrics": "/metrics",
                "explorer": "/ui/",
            },
            "endpoints": [
                {
                    "method": "POST",
                    "path": "/identify",
                    "summary": "Reconcile one email/phone pair and answer with its whole cluster",
                }
            ],
        }
    },
    summary="What this service is, where its document, health, metrics and explorer are, and"
    " its operations (never needs a key)",
    ok=schemas.Index,
    ok_description="A small JSON index of the API. `links` and the paths of `endpoints` are"
    " relative to the server; `endpoints` lists every operation of this document.",
    unavailable=False,
)
def index() -> ResponseReturnValue:
    """Where a newcomer's browser or curl lands: what this is and where to go next. Open."""
    doc = document()
    root = request.script_root  # a prefix when the app is mounted below one
    return jsonify(
        {
            "service": doc["info"]["title"],
            "version": doc["info"]["version"],
            "description": "Links every contact that shares an email or a phone into one"
            " person under its oldest contact.",
            "links": {
                "openapi": url_for("openapi.document"),
                "health": url_for("identity.healthz"),
                "metrics": url_for("metrics.metrics"),
                "explorer": root + EXPLORER_PATH,
            },
            "endpoints": [
                {"method": method.upper(), "path": root + path, "summary": op["summary"]}
                for path, item in doc["paths"].items()
                for method, op in item.items()
            ],
        }
    )
