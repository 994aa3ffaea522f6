"""Prometheus metrics (issue 5): requests, latency, merges, 503s; summed across processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import RedisServer
from tests.support.processes import free_port
from tests.support.server import Server

ON_POSTGRES = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: FlaskClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return response.get_data(as_text=True)


@ON_POSTGRES
def test_requests_and_latency_by_route_and_status(client: FlaskClient) -> None:
    before = scrape(client)
    ok = {"route": "/identify", "method": "POST", "status": "200"}
    bad = {"route": "/identify", "method": "POST", "status": "400"}
    for i in range(3):
        assert client.post("/identify", json={"email": f"m{i}@x.io"}).status_code == 200
    assert client.post("/identify", json={"email": "nope"}).status_code == 400
    client.get("/no/such/thing")
    after = scrape(client)
    assert (
        value(after, "identity_http_requests_total", **ok)
        - value(before, "identity_http_requests_total", **ok)
        == 3
    )
    assert (
        value(after, "identity_http_requests_total", **bad)
        - value(before, "identity_http_requests_total", **bad)
        == 1
    )
    count = "identity_http_request_duration_seconds_count"
    assert value(after, count, **ok) - value(before, count, **ok) == 3
    # Unknown paths share one label: scanners cannot blow up the series count.
    assert (
        value(after, "identity_http_requests_total", route="unmatched", method="GET", status="404")
        >= 1
    )


@ON_POSTGRES
def test_merges_are_counted(client: FlaskClient) -> None:
    before = value(scrape(client), "identity_merges_total")
    client.post("/identify", json={"email": "george@hillvalley.edu", "phoneNumber": "919191"})
    client.post("/identify", json={"email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"})
    assert value(scrape(client), "identity_merges_total") == before  # no merge yet
    merged = client.post(
        "/identify", json={"email": "george@hillvalley.edu", "phoneNumber": "717171"}
    )
    assert merged.get_json()["contact"]["secondaryContactIds"] == [2]
    assert value(scrape(client), "identity_merges_total") == before + 1


@pytest.fixture
def unreachable_app() -> Iterator[Flask]:
    """An app whose database is a closed port: every query is refused at once."""
    app = create_app(make_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/none"))
    yield app
    app.extensions["identity.engine"].dispose()


def test_503s_are_counted_by_cause(unreachable_app: Flask) -> None:
    client = unreachable_app.test_client()
    before = scrape(client)
    response = client.post("/identify", json={"email": "a@b.io"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    after = scrape(client)
    labels = {"route": "/identify", "reason": "unreachable"}
    assert (
        value(after, "identity_unavailable_responses_total", **labels)
        - value(before, "identity_unavailable_responses_total", **labels)
        == 1
    )


@pytest.mark.slow
def test_gunicorn_workers_are_summed(pg_url: str) -> None:
    """Two worker processes: one scrape counts every request, whichever worker served it."""
    server = Server(env={"DATABASE_URL": pg_url, "WEB_CONCURRENCY": "2"}).start()
    try:
        n = 40
        for i in range(n):
            status, _, _ = server.request("POST", "/identify", {"phoneNumber": f"100{i:03d}"})
            assert status == 200
        for _ in range(6):  # several scrapes land on both workers
            _, headers, body = server.request("GET", "/metrics")
            text = body.decode()
            assert (
                value(
                    text,
                    "identity_http_requests_total",
                    route="/identify",
                    method="POST",
                    status="200",
                )
                == n
            )
    finally:
        server.stop()
        server.remove_log()


@ON_POSTGRES
def test_event_pipeline_gauges_without_a_broker(client: FlaskClient) -> None:
    before = scrape(client)
    events = [{"eventId": f"m-{i}", "email": f"ev{i}@x.io"} for i in range(3)]
    assert client.post("/events", json=events).status_code == 202
    assert client.post("/events", json=events).status_code == 202  # duplicates: no new effect
    after = scrape(client)
    applied = "identity_events_applied_total"
    assert value(after, applied) - value(before, applied) == 3
    assert value(after, "identity_event_inbox_pending") == 0
    assert value(after, "identity_dead_letters") == 0
    assert value(after, "identity_metrics_source_up", source="database") == 1
    assert ("identity_queue_depth" in after) is False  # no broker configured


def test_a_scrape_survives_an_unreachable_database(unreachable_app: Flask) -> None:
    text = scrape(unreachable_app.test_client())
    assert value(text, "identity_metrics_source_up", source="database") == 0
    assert "identity_http_requests_total" in text


@ON_POSTGRES
def test_queue_depth_per_partition_and_broker_down(
    pg_url: str, engine: object, redis_server: RedisServer
) -> None:
    settings = make_settings(pg_url, redis_url=Secret(redis_server.url), identity_partitions=3)
    app = create_app(settings)
    try:
        client = app.test_client()
        # Two messages waiting in partition 1's queue, as kombu's Redis transport keeps them.
        r = redis.Redis.from_url(redis_server.url)
        r.lpush("identity.p1", b"{}", b"{}")
        r.close()
        text = scrape(client)
        assert value(text, "identity_queue_depth", partition="1", queue="identity.p1") == 2
        assert value(text, "identity_queue_depth", partition="0", queue="identity.p0") == 0
        assert value(text, "identity_metrics_source_up", source="broker") == 1
        redis_server.stop()
        text = scrape(client)
        assert value(text, "identity_metrics_source_up", source="broker") == 0
        assert value(text, "identity_metrics_source_up", source="database") == 1
    finally:
        app.extensions["identity.engine"].dispose()
