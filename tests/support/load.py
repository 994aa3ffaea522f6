"""Concurrent HTTP load against a served process, and the checks every load test makes."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.normalize import Identifiers, normalize_identifiers
from tests.support.invariants import Pair, assert_consistent, check_invariants, live_rows
from tests.support.server import Server


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


def answered_identifiers(body: dict[str, Any], data: dict[str, Any]) -> Identifiers:
    """The request's identifiers as applied: without the values a guard ignored."""
    ids = normalize_identifiers(body.get("email"), body.get("phoneNumber"))
    ignored = {i["field"] for i in data.get("ignored", ())}
    return Identifiers(
        email=None if "email" in ignored else ids.email,
        phone=None if "phoneNumber" in ignored else ids.phone,
    )


def check_outcome(
    name: str,
    outcome: Outcome,
    elapsed: float,
    server: Server,
    engine: Engine,
    *,
    clients: int,
    min_relinked: int,
    also_accepted: Iterable[Pair] = (),
) -> None:
    """Every answer holds its own identifiers and fits the final clusters; I1-I6 hold.

    ``also_accepted``: pairs accepted by another writer meanwhile (events applied), part of
    the union-find model too.
    """
    violations: list[str] = list(outcome.failures)
    accepted: list[Pair] = list(also_accepted)
    for body, data in outcome.answered:
        ids = answered_identifiers(body, data)
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
