"""The OpenAPI document (issue 5): valid, complete, and true to the implementation."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api.openapi import document
from api.spec import DOCUMENT, EXCLUDED

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def openapi_path(rule: str) -> str:
    """Flask's ``/persons/<int:contact_id>`` is OpenAPI's ``/persons/{contact_id}``."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def operations_in_app(app: Flask) -> set[tuple[str, str]]:
    """The JSON API's operations; the explorer page's files (``ui.*``) are not the API."""
    return {
        (openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in EXCLUDED  # each left out with its reason (api/spec.py)
        for method in (rule.methods or set()) - IGNORED_METHODS
    }


def operations_in_document(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item}


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """Validate against a schema of the document; its "#/components/..." refs resolve
    because the document's components sit at the root of the schema validated."""
    return Draft202012Validator({"allOf": [schema], "components": document()["components"]})


def test_document_is_valid_openapi() -> None:
    validate(document())


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_every_route_is_documented_and_every_documented_route_exists(app: Flask) -> None:
    in_app = operations_in_app(app)
    in_doc = operations_in_document(document())
    assert in_app - in_doc == set(), "routes missing from api/openapi.json"
    assert in_doc - in_app == set(), "documented operations the app does not serve"


def all_examples() -> list[tuple[str, dict[str, Any], Any]]:
    found = []
    for path, item in document()["paths"].items():
        for method, op in item.items():
            bodies = [("request", op.get("requestBody", {}))]
            bodies += [(status, r) for status, r in op["responses"].items()]
            for label, part in bodies:
                for media, content in part.get("content", {}).items():
                    for name, example in content.get("examples", {}).items():
                        found.append(
                            (
                                f"{method} {path} {label} {media} {name}",
                                content["schema"],
                                example["value"],
                            )
                        )
    return found


@pytest.mark.parametrize(
    ("where", "schema", "example"), all_examples(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_examples_validate_against_their_schemas(
    where: str, schema: dict[str, Any], example: Any
) -> None:
    errors = list(validator_for(schema).iter_errors(example))
    assert not errors, f"{where}: {errors[0].message}"


def test_schemas_reject_what_the_api_rejects() -> None:
    """The validator is not vacuous: wrong shapes fail."""
    request = document()["components"]["schemas"]["IdentifyRequest"]
    v = validator_for(request)
    assert v.is_valid({"email": "a@b.c", "phoneNumber": 123})
    assert not v.is_valid({"email": 5})
    assert not v.is_valid({"phoneNumber": -1})
    assert not v.is_valid({"email": "a@b.c", "name": "x"})
    answer = validator_for({"$ref": "#/components/schemas/IdentifyResponse"})
    assert not answer.is_valid({"contact": {"primaryContactId": 1}})


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    if method not in document()["paths"][path]:  # a method the path does not serve
        assert status == 405
        return {"$ref": "#/components/schemas/Error"}
    responses = document()["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method} {path} answered undocumented {status}"
    return responses[str(status)]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_real_answers_match_the_document(client: FlaskClient) -> None:
    cases = [
        ("get", "/", None),
        ("post", "/", None),
        ("post", "/identify", {"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}),
        ("post", "/identify", {"email": "mcfly@hillvalley.edu", "phoneNumber": 123456}),
        ("post", "/identify", {"email": "not an email"}),
        ("post", "/identify", {}),
        ("post", "/identify", [1, 2]),
        ("get", "/identify", None),
        ("get", "/healthz", None),
        ("post", "/events", [{"eventId": "e-1", "email": "a@b.io", "source": "checkout"}]),
        ("post", "/events", {"email": "c@d.io", "phoneNumber": 42424}),
        ("post", "/events", [{"email": "c@d.io"}, {"email": "bad"}]),
        ("post", "/events", []),
        ("get", "/queues", None),
        ("get", "/dead-letters", None),
    ]
    for method, path, body in cases:
        response = getattr(client, method)(path, json=body)
        schema = response_schema(path, method, response.status_code)
        errors = list(validator_for(schema).iter_errors(response.get_json()))
        assert not errors, f"{method} {path} -> {response.status_code}: {errors[0].message}"
    wrong_type = client.post("/identify", data="x", content_type="text/plain")
    assert not list(
        validator_for(response_schema("/identify", "post", wrong_type.status_code)).iter_errors(
            wrong_type.get_json()
        )
    )
    served = client.get("/openapi.json")
    assert served.status_code == 200 and served.get_json() == document()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_root_is_a_json_index_of_the_api(client: FlaskClient) -> None:
    """Issue 15: `GET /` answered 404. It says what this is and where to go, never redirects."""
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "application/json"
    index = response.get_json()
    assert index["service"] == "identity-reconciliation"
    assert index["links"] == {
        "openapi": "/openapi.json",
        "health": "/healthz",
        "metrics": "/metrics",
        "explorer": "/ui/",  # the explorer page (SPEC.md); served by its own blueprint
    }
    for name in ("openapi", "health", "metrics"):
        assert client.get(index["links"][name]).status_code == 200, name
    # Every operation of the document, and nothing else: the index cannot go stale.
    listed = {(e["path"], e["method"].lower()) for e in index["endpoints"]}
    assert listed == operations_in_document(document())
    identify = next(e for e in index["endpoints"] if e["path"] == "/identify")
    assert identify == {
        "method": "POST",
        "path": "/identify",
        "summary": document()["paths"]["/identify"]["post"]["summary"],
    }


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_root_index_links_below_the_prefix_the_app_is_mounted_at(client: FlaskClient) -> None:
    index = client.get("/", base_url="http://localhost/identity/").get_json()
    assert index["links"]["openapi"] == "/identity/openapi.json"
    assert index["links"]["explorer"] == "/identity/ui/"
    assert {"method": "POST", "path": "/identity/identify"} in [
        {"method": e["method"], "path": e["path"]} for e in index["endpoints"]
    ]


def test_the_committed_document_is_the_generated_one() -> None:
    """api/openapi.json is written by `make openapi`; edit the models and routes, not it."""
    from api.spec import build_app, generate, render

    app = build_app()
    try:
        generated = render(generate(app))
    finally:
        app.extensions["identity.engine"].dispose()
    assert DOCUMENT.read_text(encoding="utf-8") == generated, "stale: run `make openapi`"


def test_a_route_without_a_description_stops_the_generator() -> None:
    """A new blueprint (the explorer's /ui/, say) is documented or excluded with a reason."""
    from api.spec import EXCLUDED, build_app, generate

    app = build_app()
    app.add_url_rule("/ui/", "ui.page", lambda: "<html></html>")
    with pytest.raises(LookupError, match="ui.page"):
        generate(app)
    assert all(reason.strip() for reason in EXCLUDED.values())
    app.extensions["identity.engine"].dispose()


def test_in_testing_mode_an_answer_off_its_model_fails_the_request() -> None:
    """Every API test checks its answers against their models (api.spec.check_answers)."""
    from flask import jsonify
    from pydantic import ValidationError

    from api import schemas
    from api.spec import build_app, operation

    app = build_app()
    app.config["TESTING"] = True

    @app.get("/drifted")
    @operation(id="drifted", summary="x", ok=schemas.WhoAmI, ok_description="x")
    def drifted() -> object:
        return jsonify({"role": "superuser"})

    with pytest.raises(ValidationError):
        app.test_client().get("/drifted")
    app.extensions["identity.engine"].dispose()
