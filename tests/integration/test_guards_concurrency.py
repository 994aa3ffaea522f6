"""The generic threshold under concurrent load, against a REAL gunicorn server on PostgreSQL
(SPEC "Guards": the count is read under the value's identifier lock, so concurrent requests
cannot overshoot it, and only one of them crosses it).

32 client threads race on one shared phone, each with its own emails, a barrier before
every request so that they really arrive at once. Afterwards the phone is generic with
exactly GENERIC_THRESHOLD distinct partner emails in live contacts and links, one
``guard.marked`` change, and I1-I6 hold with ignored values taken out of the assertions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.support.db import reset_contacts
from tests.support.load import Outcome, check_outcome, run_clients
from tests.support.server import Server, serve

pytestmark = pytest.mark.slow

CLIENTS = 32
THRESHOLD = 20
ROUNDS = 3
SHARED = "5550100"


@pytest.fixture(scope="module")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("served-guards")
    env = {
        "DATABASE_URL": pg_url,
        "GENERIC_THRESHOLD": str(THRESHOLD),
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "16",
        "DB_POOL_SIZE": "16",
        "DB_MAX_OVERFLOW": "4",
        "LOG_LEVEL": "INFO",
    }
    with serve(env, cwd=workdir, log_path=workdir / "server.log") as running:
        yield running


def without_ignored(outcome: Outcome) -> Outcome:
    """The outcome as the model sees it: an ignored value is not an accepted assertion."""
    kept = Outcome(failures=list(outcome.failures))
    for body, data in outcome.answered:
        dropped = {i["field"] for i in data.get("ignored", [])}
        kept.answered.append(({k: v for k, v in body.items() if k not in dropped}, data))
    return kept


def test_racing_on_one_shared_phone_marks_it_once_at_exactly_the_threshold(
    server: Server, pg_engine: Engine
) -> None:
    reset_contacts(pg_engine)

    def plan(client: int) -> list[dict[str, Any]]:
        # Phones arrive spelled differently; they normalize to one value.
        spellings = [SHARED, int(SHARED), "555-0100"]
        return [
            {"email": f"c{client}.r{r}@shop.test", "phoneNumber": spellings[(client + r) % 3]}
            for r in range(ROUNDS)
        ]

    outcome, elapsed = run_clients(server, [plan(c) for c in range(CLIENTS)], barrier_every=1)
    assert not outcome.failures, outcome.failures[:5]
    assert len(outcome.answered) == CLIENTS * ROUNDS

    ignored = [data["ignored"] for _, data in outcome.answered if "ignored" in data]
    assert all(i == [{"field": "phoneNumber", "reason": "generic"}] for i in ignored)
    assert len(ignored) == CLIENTS * ROUNDS - THRESHOLD  # every request but the first 20

    with pg_engine.connect() as conn:
        partners = conn.execute(
            text(
                "SELECT count(DISTINCT email) FROM ("
                " SELECT email FROM contact WHERE deleted_at IS NULL AND phone_number = :p"
                " AND email IS NOT NULL UNION ALL SELECT email FROM link WHERE phone_number = :p"
                ") x"
            ),
            {"p": SHARED},
        ).scalar_one()
        marks = conn.execute(text("SELECT field, value, partners FROM generic_value")).all()
        marked_changes = conn.execute(
            text("SELECT count(*) FROM change WHERE kind = 'guard.marked'")
        ).scalar_one()
    assert partners == THRESHOLD  # no overshoot
    assert [tuple(m) for m in marks] == [("phoneNumber", SHARED, THRESHOLD + 1)]
    assert marked_changes == 1  # only one request crossed

    check_outcome(
        "generic race",
        without_ignored(outcome),
        elapsed,
        server,
        pg_engine,
        clients=CLIENTS,
        min_relinked=0,
    )
