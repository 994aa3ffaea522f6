"""Migration 0003 backfills links so that every stored cluster stays one cluster (SPEC.md,
"The graph's edges"), on fresh PostgreSQL and SQLite databases: contacts written at
revision 0002 the way merges left them, then ``upgrade head``.

The expected links are written out by hand from the SPEC's rule: split each cluster into
pieces joined by shared values alone; join each later piece (in creation order of its
oldest contact) to the primary's piece by (the primary piece's oldest email, the later
piece's oldest phone), or else (the later piece's oldest email, the primary piece's oldest
phone); cause "backfill"; a cluster with neither pair stops the migration, named.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from alembic import command
from tests.support.db import alembic_config, create_pg_database, drop_pg_database, migrate
from tests.support.graph import assertion_clusters
from tests.support.invariants import check_invariants, db_clusters

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# (id, email, phone, linked_id, minutes after T0, deleted): clusters as merges left them.
CONTACTS = [
    # The worked example: George (1), Biff (2) demoted under him by (george, 717171).
    (1, "george@hillvalley.edu", "919191", None, 0, False),
    (2, "biffsucks@hillvalley.edu", "717171", 1, 1, False),
    # A deleted row takes part in nothing: it would be a piece of its own otherwise.
    (3, "gone@hillvalley.edu", "313131", 1, 2, True),
    # One piece (rule 2 only): Lorraine and McFly share a phone; no link is needed.
    (4, "lorraine@hillvalley.edu", "123456", None, 3, False),
    (5, "mcfly@hillvalley.edu", "123456", 4, 4, False),
    # Three pieces. The head piece {6, 9} (shared email); piece {7, 10} (shared email,
    # oldest phone 444401, the newer row's phone 444402 must not be chosen); piece {8, 11}
    # whose oldest contact has no phone, so its oldest phone is 11's.
    (6, "head@twin.pines", "440000", None, 5, False),
    (7, "second@twin.pines", "444401", 6, 6, False),
    (8, "third@twin.pines", None, 6, 7, False),
    (9, "head@twin.pines", "440009", 6, 8, False),
    (10, "second@twin.pines", "444402", 6, 9, False),
    (11, "third@twin.pines", "444411", 6, 10, False),
    # The head piece holds phones only: only the second option joins the later piece.
    (12, None, "555512", None, 11, False),
    (13, "doc@lyon.estates", "555513", 12, 12, False),
    # The later piece holds an email only: the first option lacks its phone.
    (14, "strickland@hillvalley.edu", "666614", None, 13, False),
    (15, "slacker@hillvalley.edu", None, 14, 14, False),
    # A primary alone: nothing to join.
    (16, "einstein@lyon.estates", None, None, 15, False),
]

EXPECTED_LINKS = {
    ("george@hillvalley.edu", "717171"),
    ("head@twin.pines", "444401"),
    ("head@twin.pines", "444411"),
    ("doc@lyon.estates", "555512"),
    ("slacker@hillvalley.edu", "666614"),
}

# Two pieces holding only phones: no (email, phone) pair can join them.
UNJOINABLE = [
    (17, None, "777717", None, 16, False),
    (18, None, "777718", 17, 17, False),
]


@pytest.fixture(params=["postgresql", "sqlite"])
def url_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new database of each kind, migrated to revision 0002 only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'backfill.sqlite3'}"
        migrate(url, "0002")
        yield url
        return
    name = f"identity_backfill_{os.getpid()}"
    url = create_pg_database(name)
    try:
        migrate(url, "0002")
        yield url
    finally:
        drop_pg_database(name)


def insert_contacts(engine: Engine, contacts: list[tuple[Any, ...]]) -> None:
    sqlite = engine.dialect.name == "sqlite"

    def stamp(minutes: int) -> Any:
        at = T0 + timedelta(minutes=minutes)
        # The service stores naive UTC on SQLite (identity.db.UTCDateTime).
        return at.replace(tzinfo=None).isoformat(sep=" ") if sqlite else at

    with engine.begin() as conn:
        for cid, email, phone, linked, minutes, deleted in contacts:
            conn.execute(
                text(
                    "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence,"
                    " created_at, updated_at, deleted_at)"
                    " VALUES (:id, :email, :phone, :linked, :precedence, :at, :at, :deleted)"
                ),
                {
                    "id": cid,
                    "email": email,
                    "phone": phone,
                    "linked": linked,
                    "precedence": "primary" if linked is None else "secondary",
                    "at": stamp(minutes),
                    "deleted": stamp(minutes + 100) if deleted else None,
                },
            )


def current_revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def stored_backfill(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT email, phone_number, cause FROM link")).all()
    assert {r.cause for r in rows} <= {"backfill"}, rows
    assert len(rows) == len({(r.email, r.phone_number) for r in rows})
    return {(r.email, r.phone_number) for r in rows}


def assert_clusters_kept(engine: Engine) -> None:
    """Every stored cluster is one component of contacts + links, and no more (I4)."""
    with engine.connect() as conn:
        assert check_invariants(conn) == []
        assert assertion_clusters(conn) == db_clusters(conn)


def test_backfill_links_every_stored_cluster_deterministically(url_at_0002: str) -> None:
    engine = create_engine(url_at_0002)
    try:
        insert_contacts(engine, CONTACTS)
        with engine.connect() as conn:
            # Without links the stored clusters are not the components of the contacts.
            clusters_before = db_clusters(conn)
        migrate(url_at_0002, "head")
        assert stored_backfill(engine) == EXPECTED_LINKS
        assert_clusters_kept(engine)
        with engine.connect() as conn:
            assert db_clusters(conn) == clusters_before  # the migration moved no contact

        # Down to 0002 drops the tables; up again computes the same links.
        command.downgrade(alembic_config(url_at_0002), "0002")
        assert current_revision(engine) == "0002"
        migrate(url_at_0002, "head")
        assert stored_backfill(engine) == EXPECTED_LINKS
        assert_clusters_kept(engine)
    finally:
        engine.dispose()


def test_a_cluster_no_pair_can_join_stops_the_upgrade_naming_it(url_at_0002: str) -> None:
    engine = create_engine(url_at_0002)
    try:
        insert_contacts(engine, CONTACTS + UNJOINABLE)
        with pytest.raises(Exception, match=r"cluster 17: piece starting at contact 18") as error:
            migrate(url_at_0002, "head")
        assert type(error.value).__name__ == "BackfillError"
        # Nothing of 0003 stayed behind: the operator fixes the cluster and runs it again.
        assert current_revision(engine) == "0002"
        with engine.begin() as conn:  # the fix by hand: 18 becomes a person of its own
            conn.execute(
                text(
                    "UPDATE contact SET linked_id = NULL, link_precedence = 'primary' WHERE id = 18"
                )
            )
        migrate(url_at_0002, "head")
        assert stored_backfill(engine) == EXPECTED_LINKS
        assert_clusters_kept(engine)
    finally:
        engine.dispose()
