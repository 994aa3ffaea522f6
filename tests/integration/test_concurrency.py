"""SPEC.md's invariants under concurrent load, against a REAL gunicorn server on PostgreSQL.

Client threads (stdlib http.client, keep-alive connections) send overlapping
identifiers at the server at once; every 2xx answer is recorded. Afterwards the
table must hold I1-I6 and its clusters must be exactly the union-find components
of all answered requests, whatever the interleaving was.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from identity.normalize import normalize_identifiers
from tests.support.db import reset_contacts
from tests.support.invariants import Pair, assert_consistent, check_invariants, live_rows
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


@dataclass
class Outcome:
    answered: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # non-2xx answers and connection errors


def run_clients(
    server: Server, plans: list[list[dict[str, Any]]], barrier_every: int | None = None
) -> tuple[Outcome, float]:
    """One thread and one keep-alive connection per plan; all start together.

    With ``barrier_every``, the threads also wait for each other every that many
    requests, so each batch really arrives at once (merge contention on purpose).
    """
    outcome = Outcome()
    start = threading.Barrier(len(plans))
    batch = threading.Barrier(len(plans)) if barrier_every else None

    def client(plan: list[dict[str, Any]]) -> None:
        conn = server.connection(timeout=60)
        start.wait()
        for i, body in enumerate(plan):
            if batch is not None and i % barrier_every == 0:  # type: ignore[operator]
                batch.wait()
            try:
                conn.request(
                    "POST",
                    "/identify",
                    body=json.dumps(body),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as error:
                outcome.failures.append(f"{body}: {type(error).__name__}: {error}")
                conn.close()
                conn = server.connection(timeout=60)
                continue
            if 200 <= response.status < 300:
                outcome.answered.append((body, json.loads(raw)))
            else:
                outcome.failures.append(f"{body}: HTTP {response.status} {raw[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=client, args=(plan,)) for plan in plans]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.monotonic() - began
    assert not any(t.is_alive() for t in threads), "a client thread hung"
    return outcome, elapsed


def check_outcome(
    name: str,
    outcome: Outcome,
    elapsed: float,
    server: Server,
    engine: Engine,
    *,
    clients: int,
    min_relinked: int,
) -> None:
    """Every answer holds its own identifiers and fits the final clusters; I1-I6 hold."""
    violations: list[str] = list(outcome.failures)
    accepted: list[Pair] = []
    for body, data in outcome.answered:
        ids = normalize_identifiers(body.get("email"), body.get("phoneNumber"))
        accepted.append((ids.email, ids.phone))
        contact = data["contact"]
        if ids.email is not None and ids.email not in contact["emails"]:
            violations.append(f"answer to {body} lacks its email: {data}")
        if ids.phone is not None and ids.phone not in contact["phoneNumbers"]:
            violations.append(f"answer to {body} lacks its phone: {data}")

    with engine.connect() as conn:
        rows = live_rows(conn)
        invariant_problems = check_invariants(conn)
        # A row whose link changed after its insert was re-pointed by a merge (rule 3).
        relinked = conn.execute(
            text("SELECT count(*) FROM contact WHERE updated_at > created_at")
        ).scalar_one()
    violations += invariant_problems
    # Clusters only ever grow: every answer is a snapshot of part of one final cluster.
    root_of_id = {r.id: r.linked_id or r.id for r in rows}
    root_of_key = {}
    for r in rows:
        for key in (f"e:{r.email}" if r.email else None, f"p:{r.phone}" if r.phone else None):
            if key:
                root_of_key[key] = root_of_id[r.id]
    for body, data in outcome.answered:
        contact = data["contact"]
        keys = [f"e:{e}" for e in contact["emails"]] + [f"p:{p}" for p in contact["phoneNumbers"]]
        ids = [contact["primaryContactId"], *contact["secondaryContactIds"]]
        roots = {root_of_key.get(k) for k in keys} | {root_of_id.get(i) for i in ids}
        if len(roots) != 1 or None in roots:
            violations.append(f"answer to {body} is not part of one final cluster: {data}")

    total = len(outcome.answered) + len(outcome.failures)
    retries = server.log().count("retrying transaction")  # deadlocks etc., retried inside
    print(
        f"\n{name}: {total} requests, {clients} clients, {elapsed:.1f}s elapsed,"
        f" {total / elapsed:.0f} req/s, {len(outcome.answered)} answered 2xx,"
        f" {len(rows)} rows, {relinked} re-linked by merges, {retries} retried transactions"
        f" (server total so far), {len(violations)} violations"
    )
    assert not violations, "\n".join(violations[:20])
    with engine.connect() as conn:
        assert_consistent(conn, accepted)  # I4/I6: clusters == components of all answered
    assert relinked >= min_relinked, "the load was meant to cause many merges"


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
    """Rounds of fresh hot keys hit by all clients at once: nearly every request merges."""
    reset_contacts(pg_engine)
    rounds, per_round = 20, 3

    def plan(seed: int) -> list[dict[str, Any]]:
        rng = random.Random(1000 + seed)
        bodies = []
        for r in range(rounds):
            emails = [f"hot{r}-{i}@shop.example" for i in range(4)]
            phones = [f"777{r:02d}{i}" for i in range(4)]
            for _ in range(per_round):
                # Mostly pairs, which join the tiny key set into one cluster in many orders.
                if rng.random() < 0.8:
                    bodies.append({"email": rng.choice(emails), "phoneNumber": rng.choice(phones)})
                else:
                    bodies.append(
                        mixed_body(
                            rng,
                            lambda emails=emails: rng.choice(emails),  # type: ignore[misc]
                            lambda phones=phones: rng.choice(phones),  # type: ignore[misc]
                        )
                    )
        return bodies

    plans = [plan(seed) for seed in range(CLIENTS)]  # 32 x 60 = 1,920 requests
    outcome, elapsed = run_clients(server, plans, barrier_every=per_round)
    check_outcome(
        "hot keys", outcome, elapsed, server, pg_engine, clients=CLIENTS, min_relinked=rounds
    )
