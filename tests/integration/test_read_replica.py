"""Reads on a real streaming replica (issue 13): a hot standby made by pg_basebackup from
a private primary, both on free loopback ports. /lookup and GET /persons/{id} are served
by the replica; a replica further behind than REPLICA_MAX_LAG_MS, or stopped, is left for
the primary, with no error to the client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from api import create_app
from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import http_json, serve
from tests.support.processes import (
    PrivatePostgres,
    start_private_replica,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def replica(private_pg: PrivatePostgres) -> Iterator[PrivatePostgres]:
    standby = start_private_replica(private_pg)
    yield standby
    standby.destroy()


def fallbacks(reason: str) -> float:
    value = REGISTRY.get_sample_value("identity_replica_fallback_reads_total", {"reason": reason})
    return value or 0.0


def on_replica(replica_engine: Engine, email: str) -> bool:
    with replica_engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM contact WHERE email = :e"), {"e": email}).first()
    return found is not None


def test_reads_go_to_the_replica_and_fall_back_to_the_primary(
    private_pg: PrivatePostgres, replica: PrivatePostgres
) -> None:
    settings = make_settings(
        private_pg.url,
        database_replica_url=Secret(replica.url),
        replica_max_lag_ms=60_000,  # this app never leaves a lagging replica
    )
    strict = make_settings(
        private_pg.url, database_replica_url=Secret(replica.url), replica_max_lag_ms=200
    )
    apps = [create_app(settings), create_app(strict)]
    replica_engine = create_engine(replica.url)
    try:
        with serve(apps[0]) as address, serve(apps[1]) as strict_address:
            status, body = http_json(
                address, "POST", "/identify", {"email": "doc@replica.test", "phoneNumber": "1955"}
            )
            assert status == 200
            person_id = body["contact"]["primaryContactId"]
            wait_until(
                lambda: on_replica(replica_engine, "doc@replica.test"), timeout_s=20,
                what="the replica to replay the write",
            )  # fmt: skip
            status, body = http_json(address, "POST", "/lookup", {"email": "doc@replica.test"})
            assert status == 200 and [p["primaryContactId"] for p in body["persons"]] == [person_id]
            assert http_json(address, "GET", f"/persons/{person_id}")[0] == 200

            # The replica stops replaying: what the primary writes now, it does not see.
            with replica_engine.connect() as conn:
                conn.execute(text("SELECT pg_wal_replay_pause()"))
            status, body = http_json(
                address,
                "POST",
                "/identify",
                {"email": "marty@replica.test", "phoneNumber": "198500"},
            )
            new_id = body["contact"]["primaryContactId"]
            # Served by the replica (within its 60 s bound): not there yet.
            assert http_json(address, "POST", "/lookup", {"email": "marty@replica.test"}) == (
                200,
                {"persons": []},
            )
            assert http_json(address, "GET", f"/persons/{new_id}")[0] == 404
            # Read-your-writes on request: the primary answers.
            status, body = http_json(
                address, "GET", f"/persons/{new_id}", headers={"X-Read-From": "primary"}
            )
            assert status == 200 and body["contact"]["primaryContactId"] == new_id
            # The strict app sees the lag past 200 ms (checked once a second) and reads the
            # primary instead.
            lagged = fallbacks("lag")

            def strict_sees_it() -> bool:
                answer = http_json(
                    strict_address, "POST", "/lookup", {"email": "marty@replica.test"}
                )
                assert answer[0] == 200
                return bool(answer[1]["persons"])

            wait_until(
                strict_sees_it, timeout_s=10, what="the strict app to leave the lagging replica"
            )
            assert fallbacks("lag") > lagged
            with replica_engine.connect() as conn:
                conn.execute(text("SELECT pg_wal_replay_resume()"))
            replica_engine.dispose()

            # The replica stops: every read is answered by the primary, without an error.
            unreachable = fallbacks("unreachable")
            replica.stop("fast")
            for _ in range(5):
                status, body = http_json(
                    address, "POST", "/lookup", {"email": "marty@replica.test"}
                )
                assert status == 200 and [p["primaryContactId"] for p in body["persons"]] == [
                    new_id
                ]
                status, body = http_json(address, "GET", f"/persons/{person_id}")
                assert status == 200 and body["contact"]["emails"] == ["doc@replica.test"]
            assert fallbacks("unreachable") >= unreachable + 10
            # Back: the replica serves again after its next check.
            replica.start()
            route = apps[0].extensions["identity.reads"]
            wait_until(
                lambda: http_json(address, "GET", f"/persons/{person_id}")[0] == 200
                and route.using_replica,
                timeout_s=20, interval_s=0.2, what="reads to return to the replica",
            )  # fmt: skip
    finally:
        replica_engine.dispose()
        for app in apps:
            app.extensions["identity.engine"].dispose()
            if app.extensions["identity.reads"].replica is not None:
                app.extensions["identity.reads"].replica.dispose()
