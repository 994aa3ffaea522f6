"""SPEC.md's invariants under concurrent load, against a REAL gunicorn server on PostgreSQL.

Client threads (stdlib http.client, keep-alive connections) send overlapping
identifiers at the server at once; every 2xx answer is recorded. Afterwards the
table must hold I1-I6 and its clusters must be exactly the union-find components
of all answered requests, whatever the interleaving was.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tests.support.db import reset_contacts
from tests.support.load import check_outcome, run_clients
from tests.support.server import Server, serve

pytestmark = pytest.mark.slow

CLIENTS = 32


@pytest.fixture(scope="module")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("served")
    env = {
        "DATABASE_URL": pg_url,
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "16",
        # Every thread of a worker can hold a connection: no request waits for the pool.
        "DB_POOL_SIZE": "16",
        "DB_MAX_OVERFLOW": "4",
        "LOG_LEVEL": "INFO",  # the "retrying transaction" lines are counted in the summary
    }
    with serve(env, cwd=workdir, log_path=workdir / "server.log") as running:
        yield running
    # The server is stopped by serve()'s finally, also when a test failed.
    assert running.process.poll() is not None


def mixed_body(rng: random.Random, email: Callable[[], str], phone: Callable[[], str]) -> dict:
    kind = rng.random()
    if kind < 0.25:
        return {"email": email()}
    if kind < 0.5:
        # Phones arrive as strings or JSON numbers, sometimes with separators.
        p = phone()
        return {"phoneNumber": rng.choice([p, int(p), f"{p[:3]}-{p[3:]}"])}
    return {"email": email(), "phoneNumber": phone()}


def test_overlapping_identifiers_under_concurrent_load(server: Server, pg_engine: Engine) -> None:
    reset_contacts(pg_engine)
    phases, per_client = 4, 70

    def plan(seed: int) -> list[dict[str, Any]]:
        # Each phase has its own 60 emails x 60 phones, shared by every client, with a
        # few hot keys. Pairs mostly join neighbours (email i, phone i±2), so clusters
        # grow as chains that keep merging into each other, rather than collapsing
        # into one cluster after a few requests.
        rng = random.Random(seed)
        bodies = []
        for n in range(per_client):
            phase = n * phases // per_client
            emails = [f"user{i}.p{phase}@shop.example" for i in range(60)]
            phones = [f"55{phase}{i:04d}" for i in range(60)]
            anchor = rng.randrange(60)

            def email(anchor: int = anchor, emails: list[str] = emails) -> str:
                return emails[rng.randrange(3)] if rng.random() < 0.05 else emails[anchor]

            def phone(anchor: int = anchor, phones: list[str] = phones) -> str:
                if rng.random() < 0.05:
                    return phones[rng.randrange(3)]
                return phones[(anchor + rng.randint(-2, 2)) % 60]

            bodies.append(mixed_body(rng, email, phone))
        return bodies

    plans = [plan(seed) for seed in range(CLIENTS)]  # 32 x 70 = 2,240 requests
    outcome, elapsed = run_clients(server, plans)
    assert len(outcome.answered) + len(outcome.failures) >= 2_000
    check_outcome(
        "overlapping load", outcome, elapsed, server, pg_engine, clients=CLIENTS, min_relinked=100
    )


def test_hot_keys_heavy_merge_contention(server: Server, pg_engine: Engine) -> None:
    """Rounds of a dozen fresh hot keys, hit by all clients at once (a barrier per round).

    In each round every client first sends one identifier alone, so up to a dozen
    primaries are created concurrently, then two pairs, which merge those primaries
    into one cluster from 32 directions at the same time.
    """
    reset_contacts(pg_engine)
    rounds, per_round = 20, 3

    def plan(seed: int) -> list[dict[str, Any]]:
        rng = random.Random(1000 + seed)
        bodies: list[dict[str, Any]] = []
        for r in range(rounds):
            emails = [f"hot{r}-{i}@shop.example" for i in range(6)]
            phones = [f"777{r:02d}{i}" for i in range(6)]
            if rng.random() < 0.5:
                bodies.append({"email": rng.choice(emails)})
            else:
                bodies.append({"phoneNumber": rng.choice([rng.choice(phones), int(phones[0])])})
            for _ in range(per_round - 1):
                bodies.append({"email": rng.choice(emails), "phoneNumber": rng.choice(phones)})
        return bodies

    plans = [plan(seed) for seed in range(CLIENTS)]  # 32 x 60 = 1,920 requests
    outcome, elapsed = run_clients(server, plans, barrier_every=per_round)
    check_outcome(
        "hot keys", outcome, elapsed, server, pg_engine, clients=CLIENTS, min_relinked=5 * rounds
    )
