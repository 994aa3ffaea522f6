"""Every bad-input class of SPEC.md: a clear 4xx with a JSON error body, and nothing written."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from tests.support.rows import snapshot

JSON = "application/json"


@pytest.fixture
def seeded(client: FlaskClient, engine: Engine) -> Iterator[list[tuple[Any, ...]]]:
    """One cluster already stored, so a bad request has something it must not touch."""
    ok = client.post("/identify", json={"email": "lorraine@hillvalley.edu", "phoneNumber": "123"})
    assert ok.status_code == 200
    before = snapshot(engine)
    assert len(before) == 1
    yield before
    assert snapshot(engine) == before, "a rejected request wrote to the table"


def post(client: FlaskClient, data: bytes | str, content_type: str | None = JSON) -> Any:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return client.post("/identify", data=data, headers=headers)


def post_chunked(client: FlaskClient, body: bytes) -> Any:
    """A chunked upload: no Content-Length, the stream marked as terminated by the server."""
    return client.post(
        "/identify",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def assert_error(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body, dict)
    assert set(body) <= {"error", "field"}, body
    assert isinstance(body["error"], str) and body["error"]
    for word in words:
        assert word in body["error"], (word, body)
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "raw",
    ['{"email": "a@b.c"', "hello", "", "   ", "{'email': 'a@b.c'}", '{"email": "a@b.c",}'],
    ids=["truncated", "bare-word", "empty", "blank", "single-quotes", "trailing-comma"],
)
def test_not_json(client: FlaskClient, seeded: object, raw: str) -> None:
    assert_error(post(client, raw), 400, "not valid JSON")


def test_json_with_a_byte_order_mark_is_rejected(client: FlaskClient, seeded: object) -> None:
    assert_error(post(client, '\ufeff{"email": "a@b.c"}'.encode()), 400, "not valid JSON")


@pytest.mark.parametrize(
    "raw",
    ['[{"email": "a@b.c"}]', '"a@b.c"', "123456", "null", "true", "[]"],
    ids=["array", "string", "number", "null", "bool", "empty-array"],
)
def test_not_an_object(client: FlaskClient, seeded: object, raw: str) -> None:
    assert_error(post(client, raw), 400, "must be a JSON object")


WRONG_TYPE = [
    ('{"email": 5}', "email"),
    ('{"email": true}', "email"),
    ('{"email": ["a@b.c"]}', "email"),
    ('{"email": {"address": "a@b.c"}}', "email"),
    ('{"phoneNumber": true}', "phoneNumber"),
    ('{"phoneNumber": false}', "phoneNumber"),
    ('{"phoneNumber": 1234.5}', "phoneNumber"),
    ('{"phoneNumber": 123456.0}', "phoneNumber"),
    ('{"phoneNumber": 1e400}', "phoneNumber"),
    ('{"phoneNumber": ["123456"]}', "phoneNumber"),
    ('{"phoneNumber": {"n": "123456"}}', "phoneNumber"),
    ('{"email": "a@b.c", "phoneNumber": -123456}', "phoneNumber"),
]
INVALID_VALUE = [
    ('{"email": "lorraine"}', "email"),
    ('{"email": "a@@b.c"}', "email"),
    ('{"email": "a b@c.d"}', "email"),
    ('{"email": "a\\u0000b@c.d"}', "email"),
    ('{"email": "\\ud800@c.d"}', "email"),  # lone surrogate: was a 500
    ('{"email": "' + "x" * 250 + '@b.c"}', "email"),
    ('{"phoneNumber": "12"}', "phoneNumber"),
    ('{"phoneNumber": 12}', "phoneNumber"),
    ('{"phoneNumber": "' + "1" * 21 + '"}', "phoneNumber"),
    ('{"phoneNumber": ' + "1" * 21 + "}", "phoneNumber"),
    ('{"phoneNumber": "call me"}', "phoneNumber"),
    ('{"phoneNumber": "12+3456"}', "phoneNumber"),
    ('{"email": "lorraine@hillvalley.edu", "phoneNumber": "x"}', "phoneNumber"),
]


@pytest.mark.parametrize(("body", "field"), WRONG_TYPE + INVALID_VALUE)
def test_wrong_type_or_invalid_value(
    client: FlaskClient, seeded: object, body: str, field: str
) -> None:
    data = assert_error(post(client, body), 400, field)
    assert data["field"] == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"email": "a@b.c", "name": "Lorraine"}', "name"),
        ('{"Email": "a@b.c"}', "Email"),  # names are case-sensitive
        ('{"phone": "123456"}', "phone"),
        ('{"email": "a@b.c", "phoneNumber": "123", "zzz": 1, "aaa": 2}', "aaa"),
    ],
)
def test_unknown_fields_are_rejected_by_name(
    client: FlaskClient, seeded: object, body: str, field: str
) -> None:
    data = assert_error(post(client, body), 400, "unknown field", field)
    assert data["field"] == field


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        '{"email": null}',
        '{"phoneNumber": null}',
        '{"email": null, "phoneNumber": null}',
        '{"email": "", "phoneNumber": ""}',
        '{"email": "   ", "phoneNumber": " \\t "}',
        '{"email": "", "phoneNumber": null}',
    ],
)
def test_both_missing_null_or_empty(client: FlaskClient, seeded: object, body: str) -> None:
    data = assert_error(post(client, body), 400, "email", "phoneNumber")
    assert "field" not in data


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/problem+json",
        None,
    ],
)
def test_wrong_content_type(client: FlaskClient, seeded: object, content_type: str | None) -> None:
    assert_error(post(client, '{"email": "a@b.c"}', content_type), 415, "application/json")


def test_json_content_type_with_charset_parameter_is_accepted(
    client: FlaskClient, seeded: object
) -> None:
    # A lookup of the seeded contact: accepted, and (rule 4) writes nothing.
    response = post(
        client, '{"email": "lorraine@hillvalley.edu"}', "application/json; charset=utf-8"
    )
    assert response.status_code == 200
    assert response.get_json()["contact"]["primaryContactId"] == 1


def test_oversized_body(client: FlaskClient, seeded: object) -> None:
    body = '{"email": "' + "a" * (70 * 1024) + '@b.c"}'
    assert_error(post(client, body), 413, "larger than the limit")


def test_oversized_body_of_garbage_is_refused_before_parsing(
    client: FlaskClient, seeded: object
) -> None:
    assert_error(post(client, b"\xff" * (1024 * 1024)), 413)


@pytest.mark.parametrize(
    "raw",
    [b'{"email": "\xff@b.c"}', b'{"email": "a@b.c\xc3"}', b'{"email": "\xed\xa0\x80@b.c"}'],
    ids=["0xff", "truncated-sequence", "encoded-surrogate"],
)
def test_invalid_utf8(client: FlaskClient, seeded: object, raw: bytes) -> None:
    assert_error(post(client, raw), 400, "UTF-8")


def test_latin1_encoded_body_is_invalid_utf8(client: FlaskClient, seeded: object) -> None:
    raw = '{"email": "müller@b.c"}'.encode("latin-1")
    assert_error(post(client, raw, "application/json; charset=latin-1"), 400, "UTF-8")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(client: FlaskClient, seeded: object, constant: str) -> None:
    assert_error(post(client, '{"phoneNumber": ' + constant + "}"), 400, constant)


@pytest.mark.parametrize(
    "raw",
    [
        '{"email": "a@b.c", "email": "d@e.f"}',
        '{"email": "a@b.c", "email": "a@b.c"}',
        '{"phoneNumber": "123", "email": null, "phoneNumber": "456"}',
    ],
)
def test_duplicate_keys(client: FlaskClient, seeded: object, raw: str) -> None:
    assert_error(post(client, raw), 400, "twice")


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"email": ' + "[" * 20_000 + "]" * 20_000 + "}",
        '{"a": ' * 5_000 + "1" + "}" * 5_000,
    ],
    ids=["arrays", "inside-a-field", "objects"],
)
def test_deeply_nested_json(client: FlaskClient, seeded: object, raw: str) -> None:
    assert_error(post(client, raw), 400, "nested too deeply")


def test_huge_integer(client: FlaskClient, seeded: object) -> None:
    assert_error(post(client, '{"phoneNumber": ' + "9" * 5_000 + "}"), 400)


def test_wrong_method_and_unknown_path_answer_json(client: FlaskClient, seeded: object) -> None:
    assert_error(client.get("/identify"), 405)
    assert_error(client.put("/identify", json={"email": "a@b.c"}), 405)
    assert_error(client.post("/identify/", json={"email": "a@b.c"}), 404)
    assert_error(client.post("/nope", json={"email": "a@b.c"}), 404)


@pytest.mark.parametrize("size", [70 * 1024, 64 * 1024 + 1])
def test_oversized_streamed_body_without_content_length(
    client: FlaskClient, seeded: object, size: int
) -> None:
    # A chunked upload has no Content-Length to check up front; the server marks the
    # stream as terminated and the limit must hold while reading it. A valid object
    # padded past the limit must not be parsed from its first 64 KiB.
    body = b'{"email": "doc@brown.io"}' + b" " * (size - 25)
    assert_error(post_chunked(client, body), 413, "larger than the limit")


def test_streamed_body_under_the_limit_is_accepted(client: FlaskClient, engine: Engine) -> None:
    response = post_chunked(client, b'{"email": "doc@brown.io"}' + b" " * 1000)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["contact"]["emails"] == ["doc@brown.io"]
