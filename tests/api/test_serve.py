"""The default server (``python -m api.serve``, granian) serves the app as gunicorn does:
request ids, strict JSON and its error bodies, JSON logs without personal data, one
/metrics that counts every worker's requests. (gunicorn's own tests stay where they are:
tests/api/test_logging.py, test_metrics.py.)"""

from __future__ import annotations

import json
import socket

import pytest

from tests.api.test_logging import EMAIL, FORBIDDEN, PHONE
from tests.api.test_metrics import value
from tests.support.server import Server

pytestmark = pytest.mark.slow


def test_granian_serves_the_app_with_its_ids_errors_logs_and_metrics(pg_url: str) -> None:
    server = Server(
        env={"DATABASE_URL": pg_url, "LOG_LEVEL": "DEBUG", "WEB_CONCURRENCY": "2"},
        kind="granian",
    ).start()
    try:
        status, headers, body = server.request(
            "POST",
            "/identify",
            {"email": EMAIL, "phoneNumber": PHONE},
            headers={"X-Request-ID": "granian-req-1"},
        )
        assert status == 200, body
        assert {k.lower(): v for k, v in headers.items()}["x-request-id"] == "granian-req-1"
        assert json.loads(body)["contact"]["emails"] == [EMAIL.lower()]
        # Strict JSON, the same error bodies.
        status, _, body = server.request(
            "POST", "/identify", b'{"email": "a@x.io", "email": "b@x.io"}'
        )
        assert (status, json.loads(body)) == (
            400,
            {"error": "request body has the key 'email' twice"},
        )
        status, _, body = server.request("POST", "/identify", b'{"phoneNumber": NaN}')
        assert status == 400 and "NaN" in json.loads(body)["error"]
        status, _, body = server.request(
            "POST", "/identify", b"{}", headers={"Content-Type": "text/plain"}
        )
        assert status == 415 and "error" in json.loads(body)
        # A careless client's query string that the server cannot parse.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET /identify?email={EMAIL}&phone={PHONE} HTTP/1.1\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 4")
        # Both workers' counters in one scrape, whichever serves it.
        n = 30
        for i in range(n):
            assert server.request("POST", "/identify", {"phoneNumber": f"200{i:03d}"})[0] == 200
        for _ in range(6):
            text = server.request("GET", "/metrics")[2].decode()
            ok = {"route": "/identify", "method": "POST", "status": "200"}
            assert value(text, "identity_http_requests_total", **ok) == n + 1
    finally:
        server.stop()
    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all(isinstance(entry, dict) and "level" in entry for entry in lines)
    access = [e for e in lines if e["logger"] == "api.access" and e.get("path") == "/identify"]
    assert any(e.get("request_id") == "granian-req-1" and e["status"] == 200 for e in access)
    for forbidden in FORBIDDEN:
        assert forbidden not in log, f"{forbidden!r} appears in the server log"
    server.remove_log()


def test_no_view_or_hook_is_a_coroutine() -> None:
    """create_app skips Flask's per-request coroutine check (api._as_is): keep it true."""
    import inspect

    from api import create_app
    from identity.settings import Settings

    app = create_app(Settings())
    hooks = [
        *app.view_functions.values(),
        *(f for fs in app.before_request_funcs.values() for f in fs),
        *(f for fs in app.after_request_funcs.values() for f in fs),
        *(f for fs in app.teardown_request_funcs.values() for f in fs),
        *(f for handlers in app.error_handler_spec.values() for by_code in handlers.values()
          for f in by_code.values()),
    ]  # fmt: skip
    assert hooks and not [f for f in hooks if inspect.iscoroutinefunction(f)]
    app.extensions["identity.engine"].dispose()
