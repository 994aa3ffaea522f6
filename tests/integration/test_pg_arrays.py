"""Array parameters sent as one literal (``db.text_array``, ``db.int_array``) come back as
they were, whatever the text holds; ids drawn from the sequences PostgreSQL named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from identity.storage.db import (
    SEQUENCES,
    create_db_engine,
    draw_ids,
    int_array,
    raw_execute,
    text_array,
)
from tests.conftest import make_settings

TRICKY = [
    "",
    "plain@shop.test",
    'quote"d',
    "back\\slash",
    "\\",
    '\\"',
    "it's",
    "com,ma",
    "{brace}",
    "sp ace",
    "NULL",
    "ünï©ødé",
    "new\nline",
]


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """PostgreSQL only: SQLite has no arrays (the event path sends these on PostgreSQL)."""
    engine = create_db_engine(make_settings(pg_url), pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def _round_trip(engine: Engine, values: list[str | None]) -> list[str | None]:
    """``values`` sent as one ``text_array`` literal and read back in order."""
    with engine.connect() as conn:
        rows = raw_execute(
            conn,
            "SELECT x FROM unnest(%(a)s::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n",
            {"a": text_array(values)},
        )
    return [r[0] for r in rows]


@pytest.mark.parametrize(
    "values",
    [
        [],
        [""],
        TRICKY,
        ["x"] * 3,
        ["a@b.co", "c@d.co"],  # nothing to escape: the literal is the plain join
        ['a","b'],  # an element that looks like the separator
        ['"', '"'],
        ["a", "b\\"],
        ['a",', '"b'],
        [None],  # NULL, not the text "NULL"
        ["a", None, "NULL", 'q"', None],
    ],
)
def test_text_arrays_round_trip(pg_engine: Engine, values: list[str | None]) -> None:
    assert _round_trip(pg_engine, values) == values


def test_int_arrays_round_trip(pg_engine: Engine) -> None:
    values = [0, -1, 2**63 - 1, -(2**63), 42]
    with pg_engine.connect() as conn:
        rows = raw_execute(conn, "SELECT unnest(%(a)s::bigint[])", {"a": int_array(values)})
        empty = raw_execute(conn, "SELECT cardinality(%(a)s::bigint[])", {"a": int_array([])})
    assert [r[0] for r in rows] == values
    assert empty == [(0,)]
    with pg_engine.connect() as conn:
        nulls = raw_execute(
            conn,
            "SELECT x FROM unnest(%(a)s::integer[]) WITH ORDINALITY AS t(x, n) ORDER BY n",
            {"a": int_array([1, None, 3])},
        )
    assert [r[0] for r in nulls] == [1, None, 3]


def test_json_and_timestamp_arrays_from_text(pg_engine: Engine) -> None:
    """The event path sends payloads as ``::json[]`` and times as ``::timestamptz[]``."""
    payloads = [json.dumps({"a": 'q"\\', "n": [1, 2]}), json.dumps({"e": "ü"})]
    moments = [
        datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
    ]
    with pg_engine.connect() as conn:
        rows = raw_execute(
            conn,
            "SELECT p::text, t FROM unnest(%(p)s::json[], %(t)s::timestamptz[])"
            " WITH ORDINALITY AS x(p, t, n) ORDER BY n",
            {"p": text_array(payloads), "t": text_array([m.isoformat() for m in moments])},
        )
    assert [json.loads(r[0]) for r in rows] == [json.loads(p) for p in payloads]
    assert [r[1] for r in rows] == moments


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.none()
        | st.text(
            alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=8,
        ),
        max_size=6,
    )
)
def test_any_text_array_round_trips(pg_engine: Engine, values: list[str | None]) -> None:
    assert _round_trip(pg_engine, values) == values


def test_ids_are_drawn_from_the_sequences_postgresql_made_for_them(pg_engine: Engine) -> None:
    """``draw_ids`` names each sequence as a literal: it must be the one behind the id."""
    with pg_engine.connect() as conn:
        for table, sequence in SEQUENCES.items():
            named = raw_execute(conn, "SELECT pg_get_serial_sequence(%(t)s, 'id')", {"t": table})
            assert named == [(f"public.{sequence}",)], table
            ids = draw_ids(conn, table, 5)
            assert ids == sorted(set(ids)) and len(ids) == 5
            assert ids[-1] < raw_execute(conn, f"SELECT nextval('{sequence}')", {})[0][0]
        assert draw_ids(conn, "contact", 0) == []
