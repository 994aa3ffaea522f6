"""The OpenAPI 3.1 document, generated from the url map and the models of api/schemas.py.

Each view says what it is with :func:`operation` (summary, body and answer models, the
errors particular to it); the rest is read from the app: paths and methods from the url
map, path parameters from its converters, 401/403 and ``security`` from ``api.auth``,
405 from the methods a path serves, 413/415 from having a body, and every schema from
pydantic. A route with no :func:`operation` and not in :data:`EXCLUDED` (with the
reason) stops the generator: a new blueprint is documented or says why not.

``make openapi`` (``python -m api.spec``) writes api/openapi.json; a test fails when the
committed file differs from what this generates.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, Response, request
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from api import auth, schemas

View = TypeVar("View", bound=Callable[..., Any])

#: Endpoints deliberately left out of the document, with the reason.
EXCLUDED: dict[str, str] = {
    "static": "Flask's static folder; the API serves no files from it",
    "ui.root": "a redirect to the explorer page /ui/, not an operation of the JSON API",
    "ui.index": "the explorer page for people (HTML), not an operation of the JSON API",
    "ui.asset": "the explorer page's own JavaScript and CSS files",
}
DOCUMENT = Path(__file__).with_name("openapi.json")
QUERY_400 = (
    "A query parameter is missing, unknown, not an integer or out of range (`field` names it)."
)
PERSON_ID = {
    "description": "Any live contact of the person, primary or secondary.",
    "maximum": schemas.MAX_ID,
}


@dataclass(frozen=True)
class Operation:
    """What a view does, in the words of the document."""

    id: str
    summary: str
    ok: type[BaseModel] | None  # None: no body (204) or not JSON (``media``)
    ok_description: str
    status: int = 200
    body: type[BaseModel] | None = None
    #: status -> description, or (description, model) when the answer is not ``Error``
    errors: Mapping[int, str | tuple[str, type[BaseModel]]] = field(default_factory=dict)
    #: path parameters (merged with what the converter says) and query parameters
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    body_limit: str = "MAX_BODY_BYTES"
    unavailable: bool = True  # may answer 503 (it reaches the database or the broker)
    media: str = "application/json"
    ok_schema: Mapping[str, Any] | None = None  # for an answer that is not a model
    examples: Mapping[str | int, Any] = field(default_factory=dict)  # "request" or a status


def operation(**spec: Any) -> Callable[[View], View]:
    """Describe a Flask view for the document; goes under ``@bp.get(...)`` and the like."""

    def attach(view: View) -> View:
        view.openapi = Operation(**spec)  # type: ignore[attr-defined]
        return view

    return attach


COMMON = {
    401: (
        "API_KEYS is set and the request has no valid `Authorization: Bearer <key>` header.",
        "an API key is required: send Authorization: Bearer <key>",
    ),
    403: (
        "Keys are configured and this key is not an admin key (ADMIN_API_KEYS).",
        "this call needs an admin key (ADMIN_API_KEYS)",
    ),
    415: ("The Content-Type is not application/json.", "Content-Type must be application/json"),
    503: (
        "The database (or, for /events, the broker) is unreachable, the connection pool stayed"
        " exhausted past DB_POOL_TIMEOUT_MS, or contention outlasted every retry. Nothing was"
        " written; retry after the Retry-After delay.",
        "database busy or unreachable, try again",
    ),
}
HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "schema": {"type": "string"},
            "description": "Seconds to wait before retrying.",
        }
    },
}


class _NoTitles(GenerateJsonSchema):
    """Property titles ("Phonenumber") say nothing the names do not."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: Mapping[str, Any], example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["examples"] = {"example": {"value": example}}
    return {"application/json": content}


def _error(
    description: str, message: str | None = None, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    example = {"error": message} if message else None
    return {"description": description, "content": _json(_ref(model or schemas.Error), example)}


def _example(response: dict[str, Any], example: Any) -> None:
    """Put the operation's own example of a status in place of the common one."""
    if example is not None:
        for content in response.get("content", {}).values():
            content["examples"] = {"example": {"value": example}}


def openapi_path(rule: str) -> str:
    """Flask's ``/persons/<int:contact_id>`` is OpenAPI's ``/persons/{contact_id}``."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def _parameters(op: Operation, converters: Mapping[str, Any]) -> list[dict[str, Any]]:
    params = []
    for name, converter in converters.items():
        schema: dict[str, Any] = {"type": "integer", "minimum": 0}
        if type(converter).__name__ != "IntegerConverter":
            schema = {"type": "string"}
        extra = dict(op.path.get(name, {}))
        description = extra.pop("description", None)
        param = {"name": name, "in": "path", "required": True, "schema": {**schema, **extra}}
        params.append(param | ({"description": description} if description else {}))
    for name, spec in op.query.items():
        spec = dict(spec)
        param = {"name": name, "in": "query", "required": spec.pop("required", False)}
        description = spec.pop("description", None)
        param["schema"] = spec
        params.append(param | ({"description": description} if description else {}))
    return params


def _operation(op: Operation, endpoint: str, methods: list[str], converters: Any) -> dict[str, Any]:
    is_open = endpoint in auth.OPEN_ENDPOINTS
    out: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.summary,
        "security": [] if is_open else [{}, {"bearerAuth": []}],
    }
    params = _parameters(op, converters)
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": _json(_ref(op.body), op.examples.get("request")),
        }
    ok: dict[str, Any] = {"description": op.ok_description}
    if op.ok is not None:
        ok["content"] = _json(_ref(op.ok), op.examples.get(op.status))
    elif op.ok_schema is not None:
        example = op.examples.get(op.status)
        ok["content"] = {
            op.media: {"schema": dict(op.ok_schema)}
            | ({"examples": {"example": {"value": example}}} if example is not None else {})
        }
    responses: dict[int, Any] = {op.status: ok}
    for status, spec in op.errors.items():
        description, model = spec if isinstance(spec, tuple) else (spec, None)
        responses[status] = _error(description, None, model)
    if not is_open:
        responses[401] = _error(*COMMON[401])
    if endpoint in auth.ADMIN_ENDPOINTS:
        responses[403] = _error(*COMMON[403])
    allowed = " or ".join(methods)
    responses[405] = _error(f"Only {allowed} is allowed.", "method not allowed for this endpoint")
    if op.body is not None:
        responses[413] = _error(
            f"The body is larger than {op.body_limit}.", "request body is larger than the limit"
        )
        responses[415] = _error(*COMMON[415])
    if op.unavailable:
        responses[503] = _error(*COMMON[503])
    for status, response in responses.items():
        _example(response, op.examples.get(status))
        if status in HEADERS:
            response["headers"] = HEADERS[status]
    out["responses"] = {str(s): responses[s] for s in sorted(responses)}
    return out


def generate(app: Flask) -> dict[str, Any]:
    """The document of every route of ``app``."""
    paths: dict[str, dict[str, Any]] = {}
    models: set[type[BaseModel]] = {schemas.Error}
    rules = [r for r in app.url_map.iter_rules() if r.endpoint not in EXCLUDED]
    for rule in rules:
        op: Operation | None = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if op is None:
            raise LookupError(
                f"{rule.rule} ({rule.endpoint}) has no @operation: describe it for the"
                " document, or add it to api.spec.EXCLUDED with the reason"
            )
        path = openapi_path(rule.rule)
        methods = sorted(m for r in rules if openapi_path(r.rule) == path for m in r.methods or ())
        methods = [m for m in methods if m not in {"HEAD", "OPTIONS"}]
        for method in methods:
            if method in (rule.methods or ()):
                item = _operation(op, rule.endpoint, methods, rule._converters)
                paths.setdefault(path, {})[method.lower()] = item
        models |= {m for m in (op.body, op.ok) if m is not None}
        models |= {e[1] for e in op.errors.values() if isinstance(e, tuple)}
    _, defs = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
        ref_template="#/components/schemas/{model}",
        schema_generator=_NoTitles,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "identity-reconciliation",
            "version": _version(),
            "description": "Links every contact that shares an email or a phone into one"
            " cluster under its oldest contact. The behavioural contract is SPEC.md;"
            " docs/OPERATIONS.md covers running it.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "http://127.0.0.1:8000"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required when the server sets API_KEYS or ADMIN_API_KEYS"
                    " (comma-separated keys). Erasures and guard changes need an admin key.",
                }
            },
            "schemas": dict(sorted(defs.get("$defs", {}).items())),
        },
    }


def check_answers(app: Flask) -> None:
    """In testing mode, every JSON answer is validated against the model that documents it.

    So every API test also proves that the served shape is the documented one; serving
    does not pay for it (the domain's ``to_json`` builds answers without a model).
    """

    @app.after_request
    def _check(response: Response) -> Response:
        if not app.testing or not response.is_json or request.endpoint is None:
            return response
        op: Operation | None = getattr(app.view_functions[request.endpoint], "openapi", None)
        if op is None:
            return response
        status = response.status_code
        spec = op.errors.get(status)
        model = op.ok if status == op.status else schemas.Error
        if isinstance(spec, tuple):
            model = spec[1]
        if model is not None:
            model.model_validate(response.get_json())  # raises: the test fails
        return response


def _version() -> str:
    from importlib.metadata import version

    return version("identity-reconciliation")


def render(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def build_app() -> Flask:
    """An app to read the url map from: explicit settings, nothing read from the environment."""
    from api import create_app
    from identity.settings import Secret, Settings

    return create_app(Settings(database_url=Secret("sqlite://")))


if __name__ == "__main__":  # `make openapi`
    text = render(generate(build_app()))
    if "--check" in sys.argv[1:]:
        stale = DOCUMENT.read_text(encoding="utf-8") != text
        sys.exit("api/openapi.json is stale: run make openapi" if stale else 0)
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}")
