"""Privacy in logs (issue 5): JSON lines, a request id, no email or phone in clear."""

from __future__ import annotations

import ast
import json
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from identity.logs import JsonFormatter, Redactor, TextFormatter
from tests.support.db import ROOT
from tests.support.server import Server

EMAIL = "Lorraine.Baines@HillValley.edu"
PHONE = "+1 (415) 555-0123"
# Every form these could take in a log: as sent, normalized, digits only.
FORBIDDEN = [EMAIL, EMAIL.lower(), "Lorraine.Baines", "lorraine.baines", "4155550123", "555-0123"]


def record(
    msg: object, *args: object, exc: bool = False, logger: str = "t", **extra: object
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(f"could not store {EMAIL} / {PHONE}")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord(logger, logging.ERROR, __file__, 1, msg, args, exc_info)
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
    # A careless client's query string, not URL-encoded: gunicorn cannot parse the request
    # line, and logs what it read ("(415) 555-0123 HTTP/1.1") formatted into its message.
    with socket.create_connection(("127.0.0.1", debug_server.port), timeout=10) as sock:
        sock.sendall(f"GET /identify?email={EMAIL}&phone={PHONE} HTTP/1.1\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    debug_server.stop()  # flush and close: every line is in the file now
    text = debug_server.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all(isinstance(entry, dict) and "level" in entry for entry in lines)
    access = [e for e in lines if e["logger"] == "api.access" and e.get("path") == "/identify"]
    assert {e["status"] for e in access} >= {200, 400}
    assert any(e.get("request_id") == "served-req-1" and e["status"] == 200 for e in access)
    assert any(e["message"].startswith("Invalid request from ip=") for e in lines)
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

    from identity.logs import JsonFormatter, TextFormatter

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
        # (not "2671" alone: a random key's hash may hold those four digits)
        assert "555-2671" not in line and "5551234567" not in line and "phone#" in line


# --- Issue 15: digits written in code stay readable; data still never in clear.

ORDER = "1234567890"  # ten digits: phone-shaped, but written in the code, not sent by anyone
BOTH_FORMATTERS = pytest.mark.parametrize("formatter_class", [JsonFormatter, TextFormatter])


@BOTH_FORMATTERS
def test_a_number_written_in_the_message_survives(formatter_class: type) -> None:
    """An order number or a count in the text of a logging call is code, not data."""
    formatter = formatter_class(Redactor(b"k"))
    # A format string, from any logger: its text is kept, its arguments are not.
    templated = formatter.format(record(f"order {ORDER} shipped to %s", PHONE, logger="shop"))
    assert f"order {ORDER} shipped to phone#" in templated
    # A message of this project's loggers, without arguments: a literal (checked below).
    own = formatter.format(record(f"order {ORDER} shipped", logger="worker.tasks"))
    assert f"order {ORDER} shipped" in own
    assert "phone#" not in own


@BOTH_FORMATTERS
def test_a_phone_passed_as_an_argument_never_survives(formatter_class: type) -> None:
    formatter = formatter_class(Redactor(b"k"))
    for logger in ("api.routes", "worker.tasks", "gunicorn.error", "t"):
        for arg in (PHONE, "4155550123", 4155550123, ORDER):
            out = formatter.format(record("identified %s", arg, logger=logger))
            assert "phone#" in out, (logger, arg)
            for value in [*FORBIDDEN, ORDER]:
                assert value not in out, (logger, arg)
        named = formatter.format(record("identified %(phone)s", {"phone": PHONE}, logger=logger))
        assert "phone#" in named and "555-0123" not in named


@BOTH_FORMATTERS
def test_emails_are_redacted_even_in_text_written_in_code(formatter_class: type) -> None:
    formatter = formatter_class(Redactor(b"k"))
    for out in (
        formatter.format(record(f"mail {EMAIL}", logger="api.routes")),
        formatter.format(record(f"mail {EMAIL} %s", 3, logger="shop")),
    ):
        assert "email#" in out
        for value in FORBIDDEN:
            assert value not in out


@BOTH_FORMATTERS
def test_a_third_party_message_formatted_before_logging_is_redacted_whole(
    formatter_class: type,
) -> None:
    """gunicorn logs a bad request line pre-formatted: the data is in the message itself."""
    formatter = formatter_class(Redactor(b"k"))
    line = f"GET /identify?phone={PHONE}&email={EMAIL}&n={ORDER} HTTP/1.1 x"
    preformatted = f"Invalid request from ip=127.0.0.1: Invalid HTTP request line: {line!r}"
    for msg, kept in ((preformatted, "Invalid request from ip=127.0.0.1"), (ValueError(line), "")):
        out = formatter.format(record(msg, logger="gunicorn.error"))
        assert kept in out and "GET /identify?phone=" in out
        for value in [*FORBIDDEN, ORDER]:
            assert value not in out
    # A message that is not a string (never in the project's code) is data too, arguments or not.
    for args in ((), (3,)):
        out = formatter.format(record(ValueError(line + " %s"), *args, logger="api.errors"))
        for value in [*FORBIDDEN, ORDER]:
            assert value not in out


def test_a_phone_in_an_extra_field_is_redacted_whatever_its_type() -> None:
    """SPEC.md lets phoneNumber arrive as a JSON number: an extra field may hold one as an int."""
    out = JsonFormatter(Redactor(b"k")).format(
        record("body", body={"phoneNumber": 4155550123, "email": EMAIL}, count=12, size=5.5)
    )
    entry = json.loads(out)
    assert entry["body"]["phoneNumber"].startswith("phone#")
    assert entry["body"]["email"].startswith("email#")
    assert (entry["count"], entry["size"]) == (12, 5.5)
    for value in [*FORBIDDEN, "4155550123"]:
        assert value not in out


@BOTH_FORMATTERS
def test_the_development_servers_debugger_pin_is_readable(
    formatter_class: type, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`make dev`: werkzeug logs the PIN as an argument; it is phone-shaped, and must be read."""
    from werkzeug.debug import DebuggedApplication

    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")  # what the reloader's serving child sees
    monkeypatch.delenv("WERKZEUG_DEBUG_PIN", raising=False)  # the generated PIN, as by default
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        debugger = DebuggedApplication(lambda environ, start_response: [], evalex=True)
    pin = debugger.pin
    assert pin is not None and Redactor(b"k").redact(pin) != pin  # phone-shaped indeed
    formatter = formatter_class(Redactor(b"k"))
    lines = [formatter.format(r) for r in caplog.records if r.name == "werkzeug"]
    assert any(f"Debugger PIN: {pin}" in line for line in lines), lines
    # The exemption is that template only: werkzeug's request lines (query strings) stay redacted.
    request_line = logging.LogRecord(
        "werkzeug", 20, __file__, 1, '"%s" %s %s', (f"GET /x?phone={PHONE} HTTP/1.1", 200, 5), None
    )
    assert "555-0123" not in formatter.format(request_line)


LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def logging_calls_without_a_literal_message(path: Path) -> tuple[int, list[str]]:
    """(logging calls seen, those whose message is not a string literal) in one file."""
    seen, bad = 0, []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"log", "logger", "logging"}
        ):
            continue
        seen += 1
        position = 1 if node.func.attr == "log" else 0
        message = node.args[position] if len(node.args) > position else None
        if not (isinstance(message, ast.Constant) and isinstance(message.value, str)):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return seen, bad


def test_the_projects_logging_calls_pass_a_literal_message() -> None:
    """What lets the formatter keep the digits of our own messages: they are written in the
    code (no f-string, no str.format, no variable), and data only ever goes in arguments."""
    seen, bad = 0, []
    for package in ("api", "identity", "worker"):
        for path in sorted((ROOT / package).rglob("*.py")):
            n, problems = logging_calls_without_a_literal_message(path)
            seen, bad = seen + n, bad + problems
    assert seen >= 10  # the check found the logging calls it is about
    assert bad == [], f"logging calls whose message is not a literal: {bad}"


@pytest.mark.parametrize(
    ("parent", "said"),
    [
        ({}, 1),  # a server that does not fork: the app is the one to say it
        ({"SERVER_SOFTWARE": "gunicorn/23.0.0"}, 0),  # a gunicorn worker: the master said it
        ({"WERKZEUG_RUN_MAIN": "true"}, 0),  # the dev server's child: its reloader said it
    ],
)
def test_create_app_warns_of_the_embedded_database_unless_a_parent_process_did(
    parent: dict[str, str],
    said: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from api import create_app
    from identity.settings import Settings

    monkeypatch.chdir(tmp_path)  # the embedded file would live here (never created: no query)
    for name in ("SERVER_SOFTWARE", "WERKZEUG_RUN_MAIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in parent.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="api"):
        app = create_app(Settings())
    app.extensions["identity.engine"].dispose()
    messages = [r.getMessage() for r in caplog.records]
    expected = f"using the embedded SQLite database sqlite:///{tmp_path / 'identity.sqlite3'}"
    assert sum(m.endswith(expected) for m in messages) == said, messages


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_access_lines_can_be_sampled_and_errors_never_are(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """ACCESS_LOG_EVERY=3: one line for every third answer below 400, each error logged."""

    from api import create_app
    from identity.settings import Settings

    app = create_app(settings.model_copy(update={"access_log_every": 3}))
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="api.access"):
        for i in range(6):
            assert client.post("/identify", json={"phoneNumber": f"555{i:04d}"}).status_code == 200
        for _ in range(2):
            assert client.post("/identify", json={"email": "nope"}).status_code == 400
    access = [r for r in caplog.records if r.name == "api.access"]
    assert sorted(r.__dict__["status"] for r in access) == [200, 200, 400, 400]
    assert Settings.from_env({"ACCESS_LOG_EVERY": "10"}, None).access_log_every == 10
    assert Settings.from_env({}, None).access_log_every == 1  # the default: every request
