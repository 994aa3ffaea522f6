"""Access (issue 5): API keys, open endpoints, loopback binding, secrets never shown."""

from __future__ import annotations

import hmac
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import auth, create_app
from identity.settings import Secret, Settings
from tests.conftest import make_settings, opened_app
from tests.support.db import ROOT

KEYS = "first-key-0123456789, second-key-abcdef "


@pytest.fixture
def keyed_app(pg_url: str, engine: object) -> Iterator[Flask]:
    with opened_app(make_settings(pg_url, api_keys=Secret(KEYS))) as app:
        yield app


@pytest.fixture
def keyed(keyed_app: Flask) -> FlaskClient:
    return keyed_app.test_client()


BODY = {"email": "doc@hillvalley.edu", "phoneNumber": "555 1955"}


def assert_401(response: Any, error_code: str | None) -> None:
    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert isinstance(response.get_json()["error"], str)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer realm=")
    if error_code:
        assert f'error="{error_code}"' in challenge
    else:
        assert "error=" not in challenge


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_identify_needs_a_key_when_keys_are_set(keyed: FlaskClient) -> None:
    assert_401(keyed.post("/identify", json=BODY), None)
    assert_401(
        keyed.post("/identify", json=BODY, headers={"Authorization": "Bearer nope"}),
        "invalid_token",
    )
    assert_401(
        keyed.post("/identify", json=BODY, headers={"Authorization": "Basic Zmlyc3Q6a2V5"}),
        "invalid_request",
    )
    assert_401(
        keyed.post("/identify", json=BODY, headers={"Authorization": "Bearer "}), "invalid_request"
    )
    # A prefix or an extension of a valid key is not a valid key.
    for near in ("first-key-012345678", "first-key-0123456789x", "first-key-0123456789,"):
        response = keyed.post("/identify", json=BODY, headers={"Authorization": f"Bearer {near}"})
        assert_401(response, "invalid_token")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_every_configured_key_is_accepted(keyed: FlaskClient) -> None:
    for key in ("first-key-0123456789", "second-key-abcdef"):
        for scheme in ("Bearer", "bearer"):
            response = keyed.post(
                "/identify", json=BODY, headers={"Authorization": f"{scheme} {key}"}
            )
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["contact"]["emails"] == ["doc@hillvalley.edu"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_rejected_requests_write_nothing(keyed: FlaskClient, keyed_app: Flask) -> None:
    keyed.post("/identify", json=BODY)
    keyed.post("/identify", json=BODY, headers={"Authorization": "Bearer wrong"})
    ok = keyed.post("/identify", json=BODY, headers={"Authorization": "Bearer second-key-abcdef"})
    assert ok.get_json()["contact"]["primaryContactId"] == 1  # nothing was inserted before it


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_health_openapi_index_and_metrics_stay_open(keyed: FlaskClient) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/openapi.json").status_code == 200
    assert keyed.get("/metrics").status_code == 200
    assert keyed.get("/").status_code == 200  # the index of the open document (issue 15)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_unknown_endpoints_are_closed_too(keyed: FlaskClient) -> None:
    """New endpoints are protected by default: only the listed ones are open."""
    assert_401(keyed.get("/admin"), None)
    assert_401(keyed.get("/identify"), None)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_without_keys_nothing_is_required(client: FlaskClient) -> None:
    assert client.post("/identify", json=BODY).status_code == 200


def test_keys_are_compared_in_constant_time_against_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = auth.parse_keys(Settings(api_keys=Secret(" a1 ,, b2,c3 ")))
    assert keys == [b"a1", b"b2", b"c3"]
    assert auth.key_matches(b"a1", keys)
    # No early exit on the first match: every key is compared, whatever matched.
    assert [k for _, k in calls] == keys
    calls.clear()
    assert not auth.key_matches(b"zz", keys)
    assert len(calls) == 3


def test_secrets_never_show_in_repr() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app:s3cret-db-pw@db.internal:5432/identity",
            "REDIS_URL": "redis://:s3cret-redis-pw@cache:6379/0",
            "API_KEYS": "s3cret-api-key-1,s3cret-api-key-2",
            "FLOWER_BASIC_AUTH": "admin:s3cret-flower-pw",
            "LOG_HASH_KEY": "s3cret-hash-key",
        },
        dotenv_path=None,
    )
    shown = repr(settings) + str(settings) + settings.safe_database_url
    assert "s3cret" not in shown
    assert settings.api_keys.get() == "s3cret-api-key-1,s3cret-api-key-2"
    assert "app:***@db.internal" in settings.safe_database_url


def test_secrets_never_logged_at_start_up(
    pg_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = pg_url.replace("postgres@", "postgres:s3cret-db-pw@")
    app = create_app(
        make_settings(url, api_keys=Secret("s3cret-api-key"), log_hash_key=Secret("s3cret-h"))
    )
    app.test_client().get("/healthz", headers={"Authorization": "Bearer s3cret-api-key"})
    app.extensions["identity.engine"].dispose()
    logged = capsys.readouterr().err + caplog.text
    assert "/healthz" in logged  # the access line was written
    assert "s3cret" not in logged


def _gunicorn_setting(name: str, env: dict[str, str], tmp_path: Path) -> Any:
    """Evaluate gunicorn.conf.py in a fresh interpreter (it sets process environment)."""
    clean = {k: v for k, v in os.environ.items() if k not in {"BIND_HOST", "PORT"}}
    clean.update(env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    code = f"import runpy; print(runpy.run_path('gunicorn.conf.py')[{name!r}])"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_server_binds_loopback_unless_configured(tmp_path: Path) -> None:
    assert _gunicorn_setting("bind", {}, tmp_path) == "127.0.0.1:8000"
    # Beyond loopback only with keys (open development mode is loopback only).
    wide = {"BIND_HOST": "0.0.0.0", "PORT": "9000", "API_KEYS": "k"}
    assert _gunicorn_setting("bind", wide, tmp_path) == "0.0.0.0:9000"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_event_endpoints_need_a_key_too(keyed: FlaskClient) -> None:
    event = [{"eventId": "k-1", "email": "doc@hillvalley.edu"}]
    assert_401(keyed.post("/events", json=event), None)
    assert_401(keyed.get("/queues"), None)
    assert_401(keyed.get("/dead-letters"), None)  # payloads are personal data
    auth = {"Authorization": "Bearer first-key-0123456789"}
    assert keyed.post("/events", json=event, headers=auth).status_code == 202
    assert keyed.get("/dead-letters", headers=auth).status_code == 200
