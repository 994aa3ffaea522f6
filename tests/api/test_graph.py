"""Contract v2 reads (SPEC "Reading without writing", "History and the change feed") through
the Flask test client on PostgreSQL and SQLite: worked examples, bad input, and proof that
no read writes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.support.graph import (
    assertion_clusters,
    live_primaries,
    replay,
    stored_links,
    table_snapshot,
)
from tests.support.invariants import db_clusters

GEORGE = "george@hillvalley.edu"
BIFF = "biffsucks@hillvalley.edu"
MARTY = "marty@hillvalley.edu"


def post(client: FlaskClient, path: str, body: Any, status: int = 200) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def get(client: FlaskClient, path: str, status: int = 200) -> Any:
    response = client.get(path)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def glue(client: FlaskClient) -> None:
    """George (1) and Biff (2), merged by (george, 717171); then Marty (3) on George's phone."""
    post(client, "/identify", {"email": GEORGE, "phoneNumber": "919191"})
    post(client, "/identify", {"email": BIFF, "phoneNumber": "717171"})
    post(client, "/identify", {"email": GEORGE, "phoneNumber": "717171"})
    post(client, "/identify", {"email": MARTY, "phoneNumber": "919191"})


def test_a_merge_records_a_link_and_its_repeat_writes_nothing(
    client: FlaskClient, engine: Engine
) -> None:
    post(client, "/identify", {"email": GEORGE, "phoneNumber": "919191"})
    post(client, "/identify", {"email": BIFF, "phoneNumber": "717171"})
    with engine.connect() as conn:
        assert stored_links(conn) == set()
    post(client, "/identify", {"email": GEORGE, "phoneNumber": "717171"})
    with engine.connect() as conn:
        assert stored_links(conn) == {(GEORGE, "717171")}
    before = table_snapshot(engine)
    post(client, "/identify", {"email": GEORGE, "phoneNumber": "717171"})
    post(client, "/identify", {"phoneNumber": "717171"})
    assert table_snapshot(engine) == before


def test_rule4_records_a_link_once_for_a_pair_no_contact_holds(
    client: FlaskClient, engine: Engine
) -> None:
    glue(client)
    # biff and 919191 are in one cluster, but no contact or link holds them together.
    answer = post(client, "/identify", {"email": BIFF, "phoneNumber": "919191"})
    assert answer["contact"]["primaryContactId"] == 1
    with engine.connect() as conn:
        assert (BIFF, "919191") in stored_links(conn)
        contacts = conn.execute(text("SELECT count(*) FROM contact")).scalar_one()
    assert contacts == 3  # rule 4: no contact written
    before = table_snapshot(engine)
    post(client, "/identify", {"email": BIFF, "phoneNumber": "919191"})
    assert table_snapshot(engine) == before


def test_lookup_finds_zero_one_or_two_persons_and_writes_nothing(
    client: FlaskClient, engine: Engine
) -> None:
    post(client, "/identify", {"email": GEORGE, "phoneNumber": "919191"})
    post(client, "/identify", {"email": BIFF, "phoneNumber": "717171"})
    before = table_snapshot(engine)
    assert post(client, "/lookup", {"email": "nobody@hillvalley.edu"}) == {"persons": []}
    one = post(client, "/lookup", {"phoneNumber": "717171"})["persons"]
    assert [p["primaryContactId"] for p in one] == [2]
    two = post(client, "/lookup", {"email": BIFF, "phoneNumber": "919-191"})["persons"]
    assert [p["primaryContactId"] for p in two] == [1, 2]
    assert two[0] == post(client, "/identify", {"email": GEORGE})["contact"]
    assert table_snapshot(engine) == before  # the two persons were not merged


def test_lookup_refuses_bad_input_like_identify(client: FlaskClient) -> None:
    assert post(client, "/lookup", {}, 400)["error"]
    assert post(client, "/lookup", {"email": "nope"}, 400)["field"] == "email"
    assert post(client, "/lookup", {"email": GEORGE, "name": "x"}, 400)["field"] == "name"
    assert client.post("/lookup", data="x", content_type="text/plain").status_code == 415
    assert client.get("/lookup").status_code == 405


def test_person_by_any_contact(client: FlaskClient) -> None:
    glue(client)
    by_primary = get(client, "/persons/1")
    assert by_primary == get(client, "/persons/3") == get(client, "/persons/2")
    assert by_primary["contact"]["secondaryContactIds"] == [2, 3]
    assert "error" in get(client, "/persons/99", 404)
    assert get(client, "/persons/0", 404)["error"]
    assert client.get("/persons/-1").status_code == 404
    assert get(client, f"/persons/{2**40}", 404)["error"]


def test_graph_names_every_contact_and_edges_that_join_them(client: FlaskClient) -> None:
    glue(client)
    graph = get(client, "/persons/3/graph")
    assert graph["primaryContactId"] == 1
    assert [c["id"] for c in graph["contacts"]] == [1, 2, 3]
    assert graph["contacts"][0]["linkPrecedence"] == "primary"
    assert graph["contacts"][1] | {"createdAt": None} == {
        "id": 2,
        "email": BIFF,
        "phoneNumber": "717171",
        "linkPrecedence": "secondary",
        "linkedId": 1,
        "createdAt": None,
    }
    assert [(k["email"], k["phoneNumber"]) for k in graph["links"]] == [(GEORGE, "717171")]
    assert graph["truncated"] is False and graph["totalContacts"] == 3
    reached = {1}
    for edge in graph["edges"]:
        assert edge["a"] in reached
        reached.add(edge["b"])
        by_id = {c["id"]: c for c in graph["contacts"]}
        if edge["via"] == "link":
            ends = {edge["link"]["email"], edge["link"]["phoneNumber"]}
            held = {by_id[edge["a"]]["email"], by_id[edge["a"]]["phoneNumber"]} | {
                by_id[edge["b"]]["email"],
                by_id[edge["b"]]["phoneNumber"],
            }
            assert ends <= held
        else:
            field = "email" if edge["via"] == "email" else "phoneNumber"
            assert by_id[edge["a"]][field] == by_id[edge["b"]][field] == edge["value"]
    assert reached == {1, 2, 3}


def test_graph_is_cut_past_the_limit_nearest_first(settings: Any, engine: Engine) -> None:

    from tests.conftest import opened_app

    with opened_app(settings.model_copy(update={"graph_limit": 3})) as app:
        client = app.test_client()
        post(client, "/identify", {"email": "hub@x.io", "phoneNumber": "5550000"})
        for n in range(1, 6):  # a chain: each new contact shares a phone with the last
            post(client, "/identify", {"email": f"c{n}@x.io", "phoneNumber": f"555000{n - 1}"})
            post(client, "/identify", {"email": f"c{n}@x.io", "phoneNumber": f"555000{n}"})
        graph = get(client, "/persons/1/graph")
    assert graph["truncated"] is True and graph["limit"] == 3
    assert graph["totalContacts"] == 11 and len(graph["contacts"]) == 3
    shown = {c["id"] for c in graph["contacts"]}
    assert 1 in shown
    assert all(e["a"] in shown and e["b"] in shown for e in graph["edges"])
    assert len(graph["edges"]) == 2


def test_why_gives_the_shortest_chain(client: FlaskClient) -> None:
    glue(client)
    why = get(client, "/persons/1/why?a=3&b=2")
    assert why["contactIds"][0] == 3 and why["contactIds"][-1] == 2
    assert len(why["edges"]) == len(why["contactIds"]) - 1
    # 3 shares George's phone; George's email is linked to Biff's phone.
    assert [e["via"] for e in why["edges"]] == ["phoneNumber", "link"]
    assert why["edges"][0]["value"] == "919191"
    assert why["edges"][1]["link"]["email"] == GEORGE
    assert get(client, "/persons/1/why?a=2&b=2")["edges"] == []
    post(client, "/identify", {"email": "loner@hillvalley.edu"})
    assert "error" in get(client, "/persons/1/why?a=1&b=4", 404)
    assert get(client, "/persons/1/why?a=1", 400)["field"] == "b"
    assert get(client, "/persons/1/why?a=x&b=1", 400)["field"] == "a"
    assert get(client, "/persons/1/why?a=1&b=2&c=3", 400)["field"] == "c"


def test_history_includes_the_absorbed_persons_changes(client: FlaskClient) -> None:
    glue(client)
    history = get(client, "/persons/2/history")
    assert history["primaryContactId"] == 1
    kinds = [(c["kind"], c["payload"]) for c in history["changes"]]
    assert kinds == [
        ("person.created", {"primaryContactId": 1, "contactId": 1}),
        ("person.created", {"primaryContactId": 2, "contactId": 2}),
        (
            "person.merged",
            {"primaryContactId": 1, "absorbedPrimaryIds": [2], "movedContactIds": [2]},
        ),
        ("contact.added", {"primaryContactId": 1, "contactId": 3}),
    ]
    assert all(c["cause"] for c in history["changes"])


def test_the_feed_pages_in_seq_order_and_holds_no_value(client: FlaskClient) -> None:
    glue(client)
    response = client.post(
        "/identify",
        json={"email": "doc@hillvalley.edu", "phoneNumber": "7719551105"},
        headers={"X-Request-ID": "req-doc-1"},
    )
    assert response.status_code == 200
    first = get(client, "/changes?limit=2")
    assert [c["seq"] for c in first["changes"]] == [1, 2] and first["next"] == 2
    rest = get(client, f"/changes?after={first['next']}")
    assert [c["seq"] for c in rest["changes"]] == [3, 4, 5]
    assert rest["changes"][-1]["cause"] == "req-doc-1"
    assert get(client, f"/changes?after={rest['next']}") == {"changes": [], "next": 5}
    text_of_feed = str(first) + str(rest)
    for value in (GEORGE, BIFF, MARTY, "919191", "717171", "doc@hillvalley.edu", "7719551105"):
        assert value not in text_of_feed


def test_the_feed_refuses_bad_parameters(client: FlaskClient) -> None:
    for query in ("after=-1", "after=x", "after=", "limit=0", "limit=1001", "since=3"):
        assert "error" in get(client, f"/changes?{query}", 400), query
    assert client.post("/changes").status_code == 405


def test_replaying_the_feed_rebuilds_every_primary(client: FlaskClient, engine: Engine) -> None:
    glue(client)
    post(client, "/identify", {"email": "x@hillvalley.edu", "phoneNumber": "111"})
    post(client, "/identify", {"email": "y@hillvalley.edu", "phoneNumber": "222"})
    post(client, "/identify", {"email": "x@hillvalley.edu", "phoneNumber": "717171"})
    post(client, "/identify", {"email": "y@hillvalley.edu", "phoneNumber": "111"})
    changes = get(client, "/changes?limit=1000")["changes"]
    with engine.connect() as conn:
        assert replay(changes) == live_primaries(conn)
        assert assertion_clusters(conn) == db_clusters(conn)


def test_pruned_feed_answers_410_with_the_oldest_seq(client: FlaskClient, engine: Engine) -> None:
    from datetime import timedelta

    from identity.feed import changes as feed
    from identity.storage.db import run_in_transaction

    glue(client)
    assert len(get(client, "/changes")["changes"]) == 4
    with engine.begin() as conn:
        conn.execute(text("UPDATE change SET at = at - INTERVAL '40 days' WHERE seq <= 2")) if (
            engine.dialect.name == "postgresql"
        ) else conn.execute(text("UPDATE change SET at = '2000-01-01 00:00:00' WHERE seq <= 2"))
    pruned = run_in_transaction(engine, lambda c: feed.prune(c, older_than=timedelta(days=30)))
    assert pruned == 2
    gone = get(client, "/changes?after=0", 410)
    assert gone["oldestSeq"] == 3 and "pruned" in gone["error"]
    assert [c["seq"] for c in get(client, "/changes?after=2")["changes"]] == [3, 4]


def test_reads_write_nothing(client: FlaskClient, engine: Engine) -> None:
    glue(client)
    get(client, "/changes")  # numbers the feed (the only bookkeeping a read may do)
    before = table_snapshot(engine)
    served_by = client.application.extensions["identity.engine"]
    stats = _write_stats(engine, served_by)
    for path in ("/persons/2", "/persons/2/graph", "/persons/2/why?a=3&b=2", "/persons/3/history"):
        get(client, path)
    post(client, "/lookup", {"email": BIFF, "phoneNumber": "919191"})
    get(client, "/changes?after=0")
    assert table_snapshot(engine) == before
    assert _write_stats(engine, served_by) == stats


def _write_stats(engine: Engine, served_by: Engine) -> Any:
    """Rows inserted, updated and deleted in the service's tables, by PostgreSQL's own
    count (which sees writes a rolled-back or since-undone change would hide)."""
    if engine.dialect.name != "postgresql":
        return None
    served_by.dispose()  # a backend reports its counts when it exits
    time.sleep(0.2)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return conn.execute(
            text(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
                " ORDER BY relname"
            )
        ).all()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_whoami_is_open_without_keys(client: FlaskClient) -> None:
    assert get(client, "/whoami") == {"role": "open"}
