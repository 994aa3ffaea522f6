"""Random request sequences against a plain in-memory model of SPEC.md's rules.

Hypothesis draws sequences over a small alphabet (so they collide and merge a lot) of
/identify requests and event batches, sends them through the Flask test client and
``apply_events`` (the worker's one domain call) to real PostgreSQL and SQLite, and checks
every answer against the model, the final tables (contacts and links) against the model,
the clusters against the components of the recorded assertions (I4), the feed against
the table (replaying it gives every contact's primary), and I1-I6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from identity.db import run_in_transaction
from identity.event_services import apply_events
from identity.events import Event
from identity.normalize import normalize_identifiers
from tests.support.db import reset_contacts
from tests.support.graph import assertion_clusters, live_primaries, replay, stored_links
from tests.support.invariants import Pair, assert_consistent, db_clusters, live_rows

EMAILS = ["a@x.io", "b@x.io", "c@x.io", "d@x.io"]
PHONES = ["111", "222", "333", "444"]

# Several spellings of each identifier, so normalization is part of what is tested.
raw_email = st.sampled_from(EMAILS).flatmap(
    lambda e: st.sampled_from([e, e.upper(), f"  {e}\t", e.capitalize()])
)
raw_phone = st.sampled_from(PHONES).flatmap(
    lambda p: st.sampled_from([p, int(p), f"{p[0]}-{p[1:]}", f" ({p}) "])
)
request_bodies = (
    st.tuples(st.none() | raw_email, st.none() | raw_phone)
    .filter(lambda pair: pair != (None, None))
    .map(lambda pair: {"email": pair[0], "phoneNumber": pair[1]})
)
# A step is one /identify request, or a batch of events applied in one transaction.
steps = request_bodies.map(lambda b: ("identify", b)) | st.lists(
    request_bodies, min_size=1, max_size=6
).map(lambda bs: ("events", bs))
sequences = st.lists(steps, min_size=1, max_size=20)


@dataclass
class ModelRow:
    id: int
    email: str | None
    phone: str | None
    linked_id: int | None


@dataclass
class Model:
    """SPEC.md rules 1-4, written the obvious way. Sequential ids are creation order."""

    rows: list[ModelRow] = field(default_factory=list)
    links: set[tuple[str, str]] = field(default_factory=set)

    def root(self, row: ModelRow) -> int:
        return row.linked_id if row.linked_id is not None else row.id

    def insert(self, email: str | None, phone: str | None, linked_id: int | None) -> None:
        self.rows.append(ModelRow(len(self.rows) + 1, email, phone, linked_id))

    def identify(self, email: str | None, phone: str | None) -> dict[str, Any]:
        roots = {
            self.root(r)
            for r in self.rows
            if (email is not None and r.email == email) or (phone is not None and r.phone == phone)
        }
        if not roots:
            self.insert(email, phone, None)  # rule 1
            return self.view(len(self.rows))
        winner = min(roots)  # oldest primary
        for r in self.rows:  # rule 3: the newer clusters join the oldest, one level deep
            if self.root(r) in roots and r.id != winner:
                r.linked_id = winner
        members = [r for r in self.rows if self.root(r) == winner]
        if (email is not None and email not in {r.email for r in members}) or (
            phone is not None and phone not in {r.phone for r in members}
        ):
            self.insert(email, phone, winner)  # rule 2
        elif email is not None and phone is not None:
            # Rule 3 records a link; so does rule 4 when no contact or link holds the pair.
            held = any((r.email, r.phone) == (email, phone) for r in self.rows)
            if len(roots) > 1 or not (held or (email, phone) in self.links):
                self.links.add((email, phone))
        return self.view(winner)

    def view(self, primary: int) -> dict[str, Any]:
        members = sorted(
            (r for r in self.rows if self.root(r) == primary), key=lambda r: (r.id != primary, r.id)
        )
        return {
            "contact": {
                "primaryContactId": primary,
                "emails": list(dict.fromkeys(r.email for r in members if r.email is not None)),
                "phoneNumbers": list(
                    dict.fromkeys(r.phone for r in members if r.phone is not None)
                ),
                "secondaryContactIds": [r.id for r in members if r.id != primary],
            }
        }


@settings(
    max_examples=60,
    deadline=None,
    # The client/engine fixtures are per test, not per example: each example starts by
    # emptying the table itself, so sharing them across examples is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=sequences)
def test_random_sequences_follow_the_model_and_keep_the_invariants(
    client: FlaskClient, engine: Engine, sequence: list[tuple[str, Any]]
) -> None:
    reset_contacts(engine)
    model = Model()
    accepted: list[Pair] = []
    for number, (kind, payload) in enumerate(sequence):
        if kind == "events":
            events = [
                Event(f"ev-{number}-{n}", normalize_identifiers(b["email"], b["phoneNumber"]))
                for n, b in enumerate(payload)
            ]
            run_in_transaction(engine, lambda conn, ev=events: apply_events(conn, ev))
            for event in events:
                model.identify(event.identifiers.email, event.identifiers.phone)
                accepted.append((event.identifiers.email, event.identifiers.phone))
            continue
        body = payload
        response = client.post("/identify", json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        ids = normalize_identifiers(body["email"], body["phoneNumber"])
        accepted.append((ids.email, ids.phone))
        got = response.get_json()
        contact = got["contact"]
        if ids.email is not None:
            assert ids.email in contact["emails"], (body, got)
        if ids.phone is not None:
            assert ids.phone in contact["phoneNumbers"], (body, got)
        assert got == model.identify(ids.email, ids.phone), body

    with engine.connect() as conn:
        assert_consistent(conn, accepted)
        stored = [(r.id, r.email, r.phone, r.linked_id) for r in live_rows(conn)]
        assert stored_links(conn) == model.links
        assert assertion_clusters(conn) == db_clusters(conn)  # I4 over contacts and links
    assert stored == [(r.id, r.email, r.phone, r.linked_id) for r in model.rows]
    feed = client.get("/changes?limit=1000").get_json()["changes"]
    assert [c["seq"] for c in feed] == list(range(1, len(feed) + 1))
    with engine.connect() as conn:
        assert replay(feed) == live_primaries(conn)
