"""POST /erasures (SPEC "Erasure") on PostgreSQL and SQLite: the worked examples, what the
feed says, bad input, access, dry runs, and that a failure half way erases nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.settings import Secret, Settings
from tests.conftest import opened_app
from tests.support.graph import assertion_clusters, live_primaries, replay, table_snapshot
from tests.support.invariants import check_invariants, db_clusters


def post(client: FlaskClient, path: str, body: Any, status: int = 200, **kw: Any) -> Any:
    response = client.post(path, json=body, **kw)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def person(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    return post(client, "/identify", body)["contact"]  # type: ignore[no-any-return]


def consistent(engine: Engine, client: FlaskClient) -> None:
    """I1-I5 hold, clusters are the components of contacts and links, and replaying the
    feed gives every live contact's primary."""
    with engine.connect() as conn:
        assert check_invariants(conn) == []
        assert assertion_clusters(conn) == db_clusters(conn)
        primaries = live_primaries(conn)
    assert replay(client.get("/changes?limit=1000").get_json()["changes"]) == primaries


def rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT id, email, phone_number, linked_id, deleted_at IS NOT NULL"
                    " FROM contact ORDER BY id"
                )
            )
        ]


def test_two_persons_glued_by_one_phone_split_when_it_is_erased(
    client: FlaskClient, engine: Engine
) -> None:
    person(client, {"email": "ann@shop.test", "phoneNumber": "5550001"})  # 1
    person(client, {"email": "bob@shop.test", "phoneNumber": "5550002"})  # 2
    glued = person(client, {"email": "bob@shop.test", "phoneNumber": "5550001"})  # merge
    assert glued["primaryContactId"] == 1 and glued["secondaryContactIds"] == [2]
    answer = post(client, "/erasures", {"phoneNumber": "555-0001"})
    assert answer["erased"] == {"contacts": 1, "links": 1, "events": 0}
    assert [p["primaryContactId"] for p in answer["persons"]] == [1, 2]
    assert answer["persons"][0] == {
        "primaryContactId": 1,
        "emails": ["ann@shop.test"],
        "phoneNumbers": [],
        "secondaryContactIds": [],
    }
    assert post(client, "/lookup", {"email": "bob@shop.test"})["persons"] == [answer["persons"][1]]
    kinds = [c["kind"] for c in client.get("/changes").get_json()["changes"]]
    assert kinds[-2:] == ["contacts.erased", "person.split"]
    consistent(engine, client)


def test_a_chain_erased_in_the_middle_splits_in_two(client: FlaskClient, engine: Engine) -> None:
    # A=(a, 111) - B=(b, 111) and (b, 222) - C=(c, 222): erasing b leaves A and C apart.
    person(client, {"email": "a@shop.test", "phoneNumber": "111"})  # 1
    person(client, {"email": "b@shop.test", "phoneNumber": "111"})  # 2 under 1
    person(client, {"email": "c@shop.test", "phoneNumber": "222"})  # 3
    person(client, {"email": "b@shop.test", "phoneNumber": "222"})  # merge 3 into 1 (link)
    answer = post(client, "/erasures", {"email": "b@shop.test"})
    assert [(p["primaryContactId"], p["emails"]) for p in answer["persons"]] == [
        (1, ["a@shop.test"]),
        (3, ["c@shop.test"]),
    ]
    # Contact 2 held only (b, 111): it keeps 111, which A holds too: still A's.
    assert answer["persons"][0]["secondaryContactIds"] == [2]
    assert answer["erased"]["links"] == 1
    consistent(engine, client)


def test_a_value_held_twice_in_a_connected_cluster_changes_no_primary(
    client: FlaskClient, engine: Engine
) -> None:
    person(client, {"email": "a@shop.test", "phoneNumber": "111"})  # 1
    person(client, {"email": "b@shop.test", "phoneNumber": "111"})  # 2
    person(client, {"email": "b@shop.test", "phoneNumber": "222"})  # 3
    person(client, {"email": "a@shop.test", "phoneNumber": "222"})  # link (a, 222)
    answer = post(client, "/erasures", {"phoneNumber": "111"})
    assert [p["primaryContactId"] for p in answer["persons"]] == [1]
    assert answer["persons"][0]["secondaryContactIds"] == [2, 3]
    with engine.connect() as conn:
        assert live_primaries(conn) == {1: 1, 2: 1, 3: 1}
    kinds = [c["kind"] for c in client.get("/changes").get_json()["changes"]]
    assert "person.split" not in kinds and kinds[-1] == "contacts.erased"
    consistent(engine, client)


def test_erasing_the_primarys_only_values_promotes_the_next_oldest(
    client: FlaskClient, engine: Engine
) -> None:
    person(client, {"email": "old@shop.test"})  # 1
    person(client, {"email": "old@shop.test", "phoneNumber": "333"})  # 2
    person(client, {"email": "new@shop.test", "phoneNumber": "333"})  # 3
    answer = post(client, "/erasures", {"email": "old@shop.test"})
    # 1 is left empty (a tombstone); 2 keeps 333, shared with 3: one person under 2.
    assert answer["persons"] == [
        {
            "primaryContactId": 2,
            "emails": ["new@shop.test"],
            "phoneNumbers": ["333"],
            "secondaryContactIds": [3],
        }
    ]
    assert rows(engine)[0] == (1, None, None, None, True)
    changes = client.get("/changes").get_json()["changes"]
    erased = changes[-1]["payload"]
    assert erased == {
        "previousPrimaryId": 1,
        "primaryContactId": 2,
        "clearedContactIds": [2],
        "tombstonedContactIds": [1],
    }
    assert "old@shop.test" not in str(changes)
    consistent(engine, client)


def test_a_contact_left_equal_to_an_older_one_becomes_a_tombstone(
    client: FlaskClient, engine: Engine
) -> None:
    person(client, {"email": "e@shop.test"})  # 1
    person(client, {"email": "e@shop.test", "phoneNumber": "444"})  # 2 -> (e, null) = 1
    post(client, "/erasures", {"phoneNumber": "444"})
    assert [r[4] for r in rows(engine)] == [False, True]  # I5: 2 is a tombstone
    consistent(engine, client)


def test_the_whole_person_by_id_and_the_expected_primary(
    client: FlaskClient, engine: Engine
) -> None:
    person(client, {"email": "p@shop.test", "phoneNumber": "555"})
    person(client, {"email": "q@shop.test", "phoneNumber": "555"})
    person(client, {"email": "other@shop.test"})
    assert "error" in post(client, "/erasures", {"personId": 2, "expectedPrimaryContactId": 2}, 409)
    answer = post(client, "/erasures", {"personId": 2, "expectedPrimaryContactId": 1})
    assert answer["erased"]["contacts"] == 2 and answer["persons"] == []
    assert post(client, "/lookup", {"phoneNumber": "555"})["persons"] == []
    assert [r[4] for r in rows(engine)] == [True, True, False]
    assert "error" in post(client, "/erasures", {"personId": 1}, 404)
    consistent(engine, client)


def test_a_dry_run_answers_the_same_and_writes_nothing(client: FlaskClient, engine: Engine) -> None:
    person(client, {"email": "ann@shop.test", "phoneNumber": "5550001"})
    person(client, {"email": "bob@shop.test", "phoneNumber": "5550001"})
    before = table_snapshot(engine)
    dry = post(client, "/erasures", {"phoneNumber": "5550001", "dryRun": True})
    assert dry["dryRun"] is True
    assert table_snapshot(engine) == before
    real = post(client, "/erasures", {"phoneNumber": "5550001"})
    assert real["dryRun"] is False
    assert {k: v for k, v in dry.items() if k != "dryRun"} == {
        k: v for k, v in real.items() if k != "dryRun"
    }


def test_erasing_a_value_nobody_holds_is_zeros(client: FlaskClient, engine: Engine) -> None:
    person(client, {"email": "ann@shop.test"})
    answer = post(client, "/erasures", {"email": "ghost@shop.test"})
    assert answer == {"erased": {"contacts": 0, "links": 0, "events": 0}, "persons": [],
                      "dryRun": False}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"email": "a@shop.test", "phoneNumber": "123"}, "phoneNumber"),
        ({"email": "a@shop.test", "name": "x"}, "name"),
        ({"email": "not-an-address"}, "email"),
        ({"phoneNumber": "12"}, "phoneNumber"),
        ({"personId": "7"}, "personId"),
        ({"personId": 0}, "personId"),
        ({"personId": True}, "personId"),
        ({"email": "a@shop.test", "dryRun": "yes"}, "dryRun"),
        ({"email": "a@shop.test", "expectedPrimaryContactId": 3}, "expectedPrimaryContactId"),
    ],
)
def test_bad_erasures_are_400_naming_the_field(
    client: FlaskClient, engine: Engine, body: dict[str, Any], field: str | None
) -> None:
    before = table_snapshot(engine)
    error = post(client, "/erasures", body, 400)
    assert error["error"] and error.get("field") == field
    assert table_snapshot(engine) == before


def test_suppress_needs_the_hash_key(client: FlaskClient, engine: Engine) -> None:
    person(client, {"email": "ann@shop.test"})
    before = table_snapshot(engine)
    error = post(client, "/erasures", {"email": "ann@shop.test", "suppress": True}, 422)
    assert "SUPPRESSION_HASH_KEY" in error["error"]
    assert table_snapshot(engine) == before


@pytest.fixture
def keyed_app(settings: Settings, engine: Engine) -> Iterator[Flask]:
    keys = settings.model_copy(
        update={"api_keys": Secret("read-key"), "admin_api_keys": Secret("admin-key")}
    )
    with opened_app(keys) as app:
        yield app


def test_erasure_needs_an_admin_key(keyed_app: Flask, engine: Engine) -> None:
    client = keyed_app.test_client()
    read = {"Authorization": "Bearer read-key"}
    admin = {"Authorization": "Bearer admin-key"}
    post(client, "/identify", {"email": "ann@shop.test"}, headers=read)
    before = table_snapshot(engine)
    assert client.post("/erasures", json={"email": "ann@shop.test"}).status_code == 401
    refused = post(client, "/erasures", {"email": "ann@shop.test"}, 403, headers=read)
    assert "admin" in refused["error"]
    assert table_snapshot(engine) == before
    assert client.get("/whoami", headers=read).get_json() == {"role": "read"}
    assert client.get("/whoami", headers=admin).get_json() == {"role": "admin"}
    assert (
        post(client, "/erasures", {"email": "ann@shop.test"}, headers=admin)["erased"]["contacts"]
        == 1
    )
    # An admin key also reads.
    assert post(client, "/lookup", {"email": "ann@shop.test"}, headers=admin) == {"persons": []}


def test_only_read_keys_configured_means_no_one_may_erase(
    settings: Settings, engine: Engine
) -> None:
    with opened_app(settings.model_copy(update={"api_keys": Secret("read-key")})) as app:
        client = app.test_client()
        read = {"Authorization": "Bearer read-key"}
        post(client, "/erasures", {"email": "a@shop.test"}, 403, headers=read)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_failure_half_way_erases_nothing(client: FlaskClient, engine: Engine) -> None:
    """The feed write comes last; make it fail (a real trigger): everything rolls back."""
    person(client, {"email": "ann@shop.test", "phoneNumber": "5550001"})
    person(client, {"email": "bob@shop.test", "phoneNumber": "5550001"})
    before = table_snapshot(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_erasure() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.kind = 'contacts.erased' THEN RAISE EXCEPTION 'injected'; END IF;"
                " RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse_erasure BEFORE INSERT ON change"
                " FOR EACH ROW EXECUTE FUNCTION refuse_erasure()"
            )
        )
    try:
        response = client.post("/erasures", json={"phoneNumber": "5550001"})
        assert response.status_code == 500 and response.get_json() == {"error": "internal error"}
        assert table_snapshot(engine) == before
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_erasure ON change"))
            conn.execute(text("DROP FUNCTION refuse_erasure()"))
    assert post(client, "/erasures", {"phoneNumber": "5550001"})["erased"]["contacts"] == 2
