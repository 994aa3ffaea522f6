"""A 10,000-contact person (SPEC.md, "Reading without writing"): GET /persons/{id}/graph is
cut at GRAPH_LIMIT contacts, the nearest the primary by edges, and /why still finds the
shortest chain across the whole cluster. Built with direct SQL on PostgreSQL (seconds, not
10,000 requests); the read times are printed, not asserted.

The cluster: 100 blocks of 100 contacts (ids in creation order). The contacts of a block
share its phone; the first contact of each later block holds the email of the last contact
of the block before, except in block 50, which a link (that email, block 50's phone) joins
instead. So the nearest 200 contacts of the primary are exactly blocks 0 and 1, and the
shortest chain from the primary to the newest contact has 1 + 2 x 99 - 1 = 198 edges: a
phone into each block's last contact, an email into the next block, except that the link
reaches block 50's last contact in one step.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.graph import assertion_clusters
from tests.support.invariants import check_invariants, db_clusters

SIZE = 10_000
BLOCK = 100
LINKED_BLOCK = 50
GRAPH_LIMIT = 200  # the default of Settings.graph_limit


def email_of(i: int) -> str:
    return f"c{i}@big.test"


def phone_of(block: int) -> str:
    return f"+3519{block:04d}000"


def build_cluster(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence,"
                " created_at, updated_at)"
                " SELECT i,"
                "  CASE WHEN i > :block AND i % :block = 1 AND (i - 1) / :block <> :linked"
                "   THEN 'c' || (i - 1) || '@big.test' ELSE 'c' || i || '@big.test' END,"
                "  '+3519' || lpad(((i - 1) / :block)::text, 4, '0') || '000',"
                "  CASE WHEN i = 1 THEN NULL ELSE 1 END,"
                "  CASE WHEN i = 1 THEN 'primary' ELSE 'secondary' END,"
                "  TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second',"
                "  TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second'"
                " FROM generate_series(1, :size) AS i"
            ),
            {"block": BLOCK, "linked": LINKED_BLOCK, "size": SIZE},
        )
        conn.execute(
            text("SELECT setval(pg_get_serial_sequence('contact', 'id'), :n)"), {"n": SIZE}
        )
        conn.execute(
            text(
                "INSERT INTO link (email, phone_number, created_at, cause)"
                " VALUES (:email, :phone, now(), 'test')"
            ),
            {"email": email_of(LINKED_BLOCK * BLOCK), "phone": phone_of(LINKED_BLOCK)},
        )


def assert_edges_valid(edges: list[dict[str, Any]], by_id: dict[int, Any]) -> None:
    """Each edge joins two contacts by a value both hold, or by a link whose email one holds
    and whose phone the other holds."""
    for edge in edges:
        a, b = by_id[edge["a"]], by_id[edge["b"]]
        if edge["via"] == "link":
            link = edge["link"]
            assert {link["email"], link["phoneNumber"]} <= {a.email, a.phone_number} | {
                b.email,
                b.phone_number,
            }, edge
        else:
            column = "email" if edge["via"] == "email" else "phone_number"
            assert getattr(a, column) == getattr(b, column) == edge["value"], edge


def timed_get(client: FlaskClient, path: str) -> tuple[Any, float]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json(), elapsed


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_10k_contact_person_is_cut_nearest_first_and_why_spans_it(
    client: FlaskClient, engine: Engine
) -> None:
    started = time.perf_counter()
    build_cluster(engine)
    built_s = time.perf_counter() - started
    with engine.connect() as conn:
        assert check_invariants(conn) == []
        assert len(db_clusters(conn)) == 1
        assert assertion_clusters(conn) == db_clusters(conn)  # one person by its edges too
        rows = conn.execute(
            text("SELECT id, email, phone_number FROM contact WHERE deleted_at IS NULL")
        ).all()
    by_id = {r.id: r for r in rows}

    graph, graph_s = timed_get(client, "/persons/1/graph")
    graph_again, graph_again_s = timed_get(client, f"/persons/{SIZE}/graph")
    assert graph_again == graph  # any contact names the person; the walk starts at its primary
    assert graph["primaryContactId"] == 1
    assert graph["truncated"] is True
    assert graph["totalContacts"] == SIZE and graph["limit"] == GRAPH_LIMIT
    shown = [c["id"] for c in graph["contacts"]]
    assert len(shown) == GRAPH_LIMIT
    assert shown == list(range(1, 2 * BLOCK + 1))  # blocks 0 and 1: the nearest, in order
    edges = graph["edges"]
    assert len(edges) == GRAPH_LIMIT - 1  # a spanning tree of the contacts shown
    reached = {1}
    for edge in edges:
        assert edge["a"] in reached and edge["b"] in set(shown), edge
        reached.add(edge["b"])
    assert reached == set(shown)
    assert_edges_valid(edges, by_id)

    why, why_s = timed_get(client, f"/persons/1/why?a=1&b={SIZE}")
    chain = why["contactIds"]
    assert chain[0] == 1 and chain[-1] == SIZE
    assert len(why["edges"]) == len(chain) - 1 == 2 * (SIZE // BLOCK - 1)
    assert [(e["a"], e["b"]) for e in why["edges"]] == list(zip(chain[:-1], chain[1:], strict=True))
    assert_edges_valid(why["edges"], by_id)
    vias = [e["via"] for e in why["edges"]]
    assert vias.count("link") == 1 and vias.count("email") == SIZE // BLOCK - 2
    print(
        f"\n10k graph: built {SIZE} contacts in {built_s:.2f}s; GET /persons/1/graph"
        f" {graph_s * 1000:.0f} ms (from the newest contact {graph_again_s * 1000:.0f} ms);"
        f" GET /persons/1/why?a=1&b={SIZE} {why_s * 1000:.0f} ms ({len(why['edges'])} edges)"
    )
