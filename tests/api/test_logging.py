"""Privacy in logs (issue 5): JSON lines, a request id, no email or phone in clear."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from api.observability import JsonFormatter, Redactor, TextFormatter
from tests.support.server import Server

EMAIL = "Lorraine.Baines@HillValley.edu"
PHONE = "+1 (415) 555-0123"
# Every form these could take in a log: as sent, normalized, digits only.
FORBIDDEN = [EMAIL, EMAIL.lower(), "Lorraine.Baines", "lorraine.baines", "4155550123", "555-0123"]


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"could not store {EMAIL} / {PHONE}")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize("formatter_class", [JsonFormatter, TextFormatter])
def test_formatter_redacts_message_extras_and_traceback(formatter_class: type) -> None:
    formatter = formatter_class(Redactor(b"k"))
    out = formatter.format(
        record("lookup %s %s", EMAIL, PHONE, exc=True, who={"email": EMAIL, "phones": [PHONE]})
    )
    for value in FORBIDDEN:
        assert value not in out
    assert "email#" in out and "phone#" in out
    assert "ValueError" in out  # the traceback is still there, only the values are gone


def test_json_lines_carry_level_logger_message_and_extras() -> None:
    out = JsonFormatter(Redactor(b"k")).format(record("hello %d", 3, status=200, request_id="r-1"))
    entry = json.loads(out)
    assert entry["level"] == "ERROR" and entry["logger"] == "t"
    assert entry["message"] == "hello 3" and entry["status"] == 200
    assert entry["request_id"] == "r-1"
    assert entry["ts"].endswith("+00:00")


def test_hashes_are_keyed_and_stable() -> None:
    a, b = Redactor(b"key-a"), Redactor(b"key-b")
    assert a.redact(EMAIL) == a.redact(EMAIL.lower()) == a.token("email", EMAIL)
    assert a.redact(EMAIL) != b.redact(EMAIL)  # without the key, no dictionary attack
    assert a.redact(PHONE) == a.redact("+14155550123")


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:8000", "attempt 3 of 8", "took 12.5 ms", "contact 123456 merged", "GET /healthz"],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor(b"k").redact(text) == text


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_request_id_is_echoed_or_generated(client: FlaskClient) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "checkout-42.a_b:c"})
    assert given.headers["X-Request-ID"] == "checkout-42.a_b:c"
    made = client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) == 32
    # Something that is not a plain token (here an email) is replaced, never echoed.
    bad = client.get("/healthz", headers={"X-Request-ID": EMAIL})
    assert bad.headers["X-Request-ID"] != EMAIL and len(bad.headers["X-Request-ID"]) == 32
    assert client.get("/healthz").headers["X-Request-ID"] != made.headers["X-Request-ID"]


@pytest.fixture
def debug_server(pg_url: str) -> Iterator[Server]:
    # DEBUG: every logger that would say anything says it.
    server = Server(env={"DATABASE_URL": pg_url, "LOG_LEVEL": "DEBUG"}).start()
    yield server
    server.stop()
    server.remove_log()


@pytest.mark.slow
def test_served_request_logs_json_with_request_id_and_no_personal_data(
    debug_server: Server,
) -> None:
    status, headers, _ = debug_server.request(
        "POST",
        "/identify",
        {"email": EMAIL, "phoneNumber": PHONE},
        headers={"X-Request-ID": "served-req-1"},
    )
    assert status == 200 and headers["X-Request-ID"] == "served-req-1"
    # A rejected one too: error paths log as well.
    status, _, _ = debug_server.request("POST", "/identify", {"email": EMAIL, "x": PHONE})
    assert status == 400
    debug_server.stop()  # flush and close: every line is in the file now
    text = debug_server.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(entry, dict) and "level" in entry for entry in lines)
    access = [e for e in lines if e["logger"] == "api.access" and e.get("path") == "/identify"]
    assert {e["status"] for e in access} >= {200, 400}
    assert any(e.get("request_id") == "served-req-1" and e["status"] == 200 for e in access)
    for value in FORBIDDEN:
        assert value not in text, f"{value!r} appears in the server log"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_real_database_error_is_logged_without_the_values(engine: Engine) -> None:
    """PostgreSQL's own DETAIL repeats the failing row; the formatter still hides it."""
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contact (email, phone_number, link_precedence, created_at, updated_at)"
                " VALUES (:e, :p, 'bogus', now(), now())"
            ),
            {"e": EMAIL.lower(), "p": "+14155550123"},
        )
    assert "parameters hidden" in str(caught.value)  # hide_parameters is on
    assert EMAIL.lower() in str(caught.value)  # ...but the server's DETAIL names the row
    error = caught.value
    rec = logging.LogRecord(
        "api.errors",
        logging.ERROR,
        __file__,
        1,
        "unhandled error",
        None,
        (type(error), error, error.__traceback__),
    )
    out = JsonFormatter(Redactor(b"k")).format(rec)
    assert "IntegrityError" in out and "Failing row" in out
    for value in FORBIDDEN:
        assert value not in out


def test_numbers_printed_side_by_side_are_not_taken_for_a_phone() -> None:
    """gunicorn's "Listening at: http://127.0.0.1:8000 (4711)" stays readable, in both formats,
    while a phone passed as an argument or inline is still hashed."""
    import logging as _logging

    from api.observability import JsonFormatter, TextFormatter

    for formatter in (JsonFormatter(), TextFormatter()):
        listening = _logging.LogRecord(
            "gunicorn.error",
            20,
            __file__,
            1,
            "Listening at: %s (%s)",
            ("http://127.0.0.1:8765", 7992),
            None,
        )
        assert "http://127.0.0.1:8765 (7992)" in formatter.format(listening)
        phone = _logging.LogRecord(
            "x", 20, __file__, 1, "got %s and %d", ("+1 (415) 555-2671", 5551234567), None
        )
        line = formatter.format(phone)
        assert "2671" not in line and "5551234567" not in line and "phone#" in line
