"""The model test, with guards: random sequences of /identify requests and event batches
over an alphabet holding blocked, suppressed and (with a threshold of 2) soon generic
values, on PostgreSQL and SQLite, against a plain model in which ignored values vanish
from the assertions (SPEC "Guards against junk and shared values").

The model's guard is written out again here, the obvious way (partners counted from the
model's own rows and links), not taken from ``identity.guards.policy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import event as note_event
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.events.messages import Event
from identity.events.services import apply_events
from identity.normalize import normalize_identifiers
from identity.settings import Secret, Settings
from identity.storage.db import run_in_transaction
from tests.conftest import make_settings
from tests.integration.test_property import Model
from tests.support.db import reset_contacts
from tests.support.graph import assertion_clusters, live_primaries, replay, stored_links
from tests.support.invariants import Pair, assert_consistent, db_clusters, live_rows

THRESHOLD = 2
BLOCKED_EMAIL, SUPPRESSED_EMAIL = "noreply@x.io", "gone@x.io"
BLOCKED_PHONE, SUPPRESSED_PHONE = "0000000", "5550199"
EMAILS = ["a@x.io", "b@x.io", "c@x.io", "d@x.io"]
PHONES = ["111", "222", "333"]


JUNK_EMAILS, JUNK_PHONES = [BLOCKED_EMAIL, SUPPRESSED_EMAIL], [BLOCKED_PHONE, SUPPRESSED_PHONE]
# Every request shape, drawn from one list (so that draws spread over distinct pairs):
# mostly pairs of ordinary values (only pairs count partners), then pairs with a junk
# value and single values.
SHAPES = (
    [(e, p) for e in EMAILS for p in PHONES] * 2
    + [
        (e, p)
        for e in EMAILS + JUNK_EMAILS
        for p in PHONES + JUNK_PHONES
        if e in JUNK_EMAILS or p in JUNK_PHONES
    ]
    + [(e, None) for e in EMAILS + JUNK_EMAILS]
    + [(None, p) for p in PHONES + JUNK_PHONES]
)


def spelled(shape: tuple[str | None, str | None]) -> st.SearchStrategy[dict[str, Any]]:
    email, phone = shape
    emails = st.just(None) if email is None else st.sampled_from([email, email.upper()])
    if phone is None:
        phones: st.SearchStrategy[Any] = st.just(None)
    else:
        phones = st.sampled_from(
            [phone, f"{phone[:3]}-{phone[3:]}" if phone[0] == "0" else int(phone)]
        )
    return st.fixed_dictionaries({"email": emails, "phoneNumber": phones})


request_bodies = st.sampled_from(SHAPES).flatmap(spelled)
steps = request_bodies.map(lambda b: ("identify", b)) | st.lists(
    request_bodies, min_size=1, max_size=6
).map(lambda bs: ("events", bs))
sequences = st.lists(steps, min_size=3, max_size=20)


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """The app of ``client``: a threshold of 2, so that generic values happen often."""
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url")
    return make_settings(
        url, generic_threshold=THRESHOLD, suppression_hash_key=Secret("property-guards-key")
    )


@dataclass
class GuardedModel:
    """SPEC rules 1-4 (``Model``) behind SPEC's guards."""

    graph: Model = field(default_factory=Model)
    generic: set[tuple[str, str]] = field(default_factory=set)

    def partners(self, kind: str, value: str) -> set[str]:
        pairs = [(r.email, r.phone) for r in self.graph.rows] + list(self.graph.links)
        if kind == "p":
            return {e for e, p in pairs if p == value and e is not None}
        return {p for e, p in pairs if e == value and p is not None}

    def reason(self, kind: str, value: str) -> str | None:
        if value in (BLOCKED_EMAIL, BLOCKED_PHONE):
            return "blocked"
        if value in (SUPPRESSED_EMAIL, SUPPRESSED_PHONE):
            return "blocked"  # suppressed, reported as blocked
        if (kind, value) in self.generic:
            return "generic"
        return None

    def identify(self, email: str | None, phone: str | None) -> tuple[int, dict[str, Any]]:
        ignored = []
        if email is not None and (why := self.reason("e", email)):
            ignored.append({"field": "email", "reason": why})
            email = None
        if phone is not None and (why := self.reason("p", phone)):
            ignored.append({"field": "phoneNumber", "reason": why})
            phone = None
        if email is not None and phone is not None:
            # The phone first; a value it marks is dropped, and then the email's partner is
            # gone, so the email is not checked.
            known = self.partners("p", phone)
            if email not in known and len(known) + 1 > THRESHOLD:
                self.generic.add(("p", phone))
                ignored.append({"field": "phoneNumber", "reason": "generic"})
                phone = None
            else:
                known = self.partners("e", email)
                if phone not in known and len(known) + 1 > THRESHOLD:
                    self.generic.add(("e", email))
                    ignored.append({"field": "email", "reason": "generic"})
                    email = None
        if email is None and phone is None:
            return 422, {"field": ignored[0]["field"]}
        answer = self.graph.identify(email, phone)
        return 200, {**answer, "ignored": ignored} if ignored else answer


def suppress(client: FlaskClient, field_name: str, value: str) -> None:
    response = client.post("/erasures", json={field_name: value, "suppress": True})
    assert response.status_code == 200, response.get_data(as_text=True)


@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=sequences)
def test_random_sequences_with_guards_follow_the_model(
    client: FlaskClient, engine: Engine, sequence: list[tuple[str, Any]]
) -> None:
    reset_contacts(engine)
    suppress(client, "email", SUPPRESSED_EMAIL)  # nobody holds them: only the hash is kept
    suppress(client, "phoneNumber", SUPPRESSED_PHONE)
    policy = client.application.extensions["identity.guards"]
    model = GuardedModel()
    accepted: list[Pair] = []

    def kept(answer: dict[str, Any], email: str | None, phone: str | None) -> Pair:
        dropped = {i["field"] for i in answer.get("ignored", [])}
        return (
            None if "email" in dropped else email,
            None if "phoneNumber" in dropped else phone,
        )

    for number, (kind, payload) in enumerate(sequence):
        if kind == "events":
            events = [
                Event(f"ev-{number}-{n}", normalize_identifiers(b["email"], b["phoneNumber"]))
                for n, b in enumerate(payload)
            ]
            run_in_transaction(engine, lambda conn, ev=events: apply_events(conn, ev, policy))
            for event in events:
                e, p = event.identifiers.email, event.identifiers.phone
                status, answer = model.identify(e, p)
                if status == 200:
                    accepted.append(kept(answer, e, p))
            continue
        ids = normalize_identifiers(payload["email"], payload["phoneNumber"])
        response = client.post("/identify", json=payload)
        status, expected = model.identify(ids.email, ids.phone)
        assert response.status_code == status, (payload, response.get_data(as_text=True))
        got = response.get_json()
        if status == 422:
            assert got["field"] == expected["field"] and got["error"], payload
            continue
        assert got == expected, payload
        accepted.append(kept(got, ids.email, ids.phone))

    with engine.connect() as conn:
        assert_consistent(conn, accepted)
        stored = [(r.id, r.email, r.phone, r.linked_id) for r in live_rows(conn)]
        assert stored_links(conn) == model.graph.links
        assert assertion_clusters(conn) == db_clusters(conn)
        marks = conn.execute(text("SELECT field, value FROM generic_value")).all()
    assert stored == [(r.id, r.email, r.phone, r.linked_id) for r in model.graph.rows]
    kinds = {"email": "e", "phoneNumber": "p"}
    assert {(kinds[f], v) for f, v in marks} == model.generic
    feed = client.get("/changes?limit=1000").get_json()["changes"]
    assert [c["seq"] for c in feed] == list(range(1, len(feed) + 1))
    assert sum(c["kind"] == "guard.marked" for c in feed) == len(model.generic)
    with engine.connect() as conn:
        assert replay(feed) == live_primaries(conn)
    note_event(f"{len(model.generic)} generic value(s)")  # --hypothesis-show-statistics
