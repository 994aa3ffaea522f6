"""Random sequences of identify, events and erasures against a plain model of SPEC.md.

Hypothesis draws sequences over a small alphabet (so they collide, merge, split and
cross the generic threshold a lot) of /identify requests, event batches (applied by
``apply_events``, the worker's one domain call) and erasures (POST /erasures, some with
``suppress``), on real PostgreSQL and SQLite. The model is the assertion graph written
the obvious way: contacts and links, the guards (a blocked value, suppressed values,
generic values crossing a threshold of 2), and clusters recomputed as components after
an erasure. Every answer is checked against the model, the final tables (contacts and
links) too, the clusters against the components of the recorded assertions (I4), the
feed against the table (replaying it gives every contact's primary), and I1-I6.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from identity.events.messages import Event
from identity.events.services import apply_events
from identity.guards.policy import GuardPolicy
from identity.normalize import normalize_identifiers, phone_spellings
from identity.settings import Secret, Settings
from identity.storage.db import run_in_transaction
from tests.conftest import opened_app
from tests.support.db import reset_contacts
from tests.support.graph import assertion_clusters, live_primaries, replay, stored_links
from tests.support.invariants import check_invariants, db_clusters, live_rows

EMAILS = ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "z@example.com"]  # the last one: blocked
PHONES = ["111", "222", "333", "444", "0000000"]  # the last one: blocked
BLOCKED = {("e", "z@example.com"), ("p", "0000000")}
THRESHOLD = 2

# Several spellings of each identifier, so normalization is part of what is tested.
raw_email = st.sampled_from(EMAILS).flatmap(
    lambda e: st.sampled_from([e, e.upper(), f"  {e}\t", e.capitalize()])
)
raw_phone = st.sampled_from(PHONES).flatmap(
    lambda p: st.sampled_from(
        [p, *([int(p)] if p[0] != "0" else []), f"{p[0]}-{p[1:]}", f" ({p}) "]
    )
)
request_bodies = (
    st.tuples(st.none() | raw_email, st.none() | raw_phone)
    .filter(lambda pair: pair != (None, None))
    .map(lambda pair: {"email": pair[0], "phoneNumber": pair[1]})
)
erasures = st.tuples(
    st.sampled_from(["email", "phoneNumber"]), st.integers(0, 3), st.booleans()
).map(lambda t: {t[0]: (EMAILS if t[0] == "email" else PHONES)[t[1]], "suppress": t[2]})
# A step: one /identify request, a batch of events applied in one transaction, an erasure.
steps = (
    request_bodies.map(lambda b: ("identify", b))
    | st.lists(request_bodies, min_size=1, max_size=6).map(lambda bs: ("events", bs))
    | erasures.map(lambda e: ("erase", e))
)
sequences = st.lists(steps, min_size=1, max_size=20)

Value = tuple[str, str]


@dataclass
class ModelRow:
    id: int
    email: str | None
    phone: str | None
    linked_id: int | None


@dataclass
class Model:
    """SPEC.md's rules, guards and erasure, written the obvious way (ids are creation order)."""

    rows: list[ModelRow] = field(default_factory=list)  # live rows only
    next_id: int = 1
    links: set[tuple[str, str]] = field(default_factory=set)
    generic: set[Value] = field(default_factory=set)
    suppressed: set[Value] = field(default_factory=set)

    def root(self, row: ModelRow) -> int:
        return row.linked_id if row.linked_id is not None else row.id

    def partners(self, value: Value) -> set[str]:
        kind, v = value
        found = set()
        for r in self.rows:
            if (r.email if kind == "e" else r.phone) == v:
                other = r.phone if kind == "e" else r.email
                if other is not None:
                    found.add(other)
        for e, p in self.links:
            if (e if kind == "e" else p) == v:
                found.add(p if kind == "e" else e)
        return found

    def screen(self, email: str | None, phone: str | None) -> tuple[list[Value], list[dict]]:
        kept: list[Value] = []
        ignored: list[dict] = []
        names = {"e": "email", "p": "phoneNumber"}
        for value in [v for v in (("e", email), ("p", phone)) if v[1] is not None]:
            reason = (
                "blocked"
                if value in BLOCKED or value in self.suppressed  # suppressed shows as blocked
                else "generic"
                if value in self.generic
                else None
            )
            if reason is None:
                kept.append(value)  # type: ignore[arg-type]
            else:
                ignored.append({"field": names[value[0]], "reason": reason})
        if len(kept) == 2:
            for value, partner in ((kept[1], kept[0]), (kept[0], kept[1])):
                if partner in kept:
                    known = self.partners(value)
                    if partner[1] not in known and len(known) + 1 > THRESHOLD:
                        self.generic.add(value)
                        kept.remove(value)
                        ignored.append({"field": names[value[0]], "reason": "generic"})
        return kept, ignored

    def identify(self, email: str | None, phone: str | None) -> dict[str, Any] | None:
        kept, ignored = self.screen(email, phone)
        if not kept:
            return None  # 422
        email = next((v for k, v in kept if k == "e"), None)
        phone = next((v for k, v in kept if k == "p"), None)
        view = self.apply(email, phone)
        if ignored:
            view["ignored"] = ignored
        return view

    def apply(self, email: str | None, phone: str | None) -> dict[str, Any]:
        roots = {
            self.root(r)
            for r in self.rows
            if (email is not None and r.email == email) or (phone is not None and r.phone == phone)
        }
        if not roots:
            return self.view(self.insert(email, phone, None))  # rule 1
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

    def insert(self, email: str | None, phone: str | None, linked_id: int | None) -> int:
        self.rows.append(ModelRow(self.next_id, email, phone, linked_id))
        self.next_id += 1
        return self.next_id - 1

    def erase(self, value: Value, suppress: bool) -> None:
        kind, v = value
        left: list[ModelRow] = []
        seen: set[tuple[str | None, str | None]] = set()
        for r in self.rows:  # oldest first
            email = None if kind == "e" and r.email == v else r.email
            phone = None if kind == "p" and r.phone == v else r.phone
            if (email, phone) == (None, None) or (email, phone) in seen:
                continue  # a tombstone: empty, or equal to an older live contact (I5)
            seen.add((email, phone))
            left.append(ModelRow(r.id, email, phone, r.linked_id))
        self.rows = left
        self.links = {(e, p) for e, p in self.links if (kind, v) not in {("e", e), ("p", p)}}
        if value in self.generic:
            self.generic.discard(value)
            suppress = True  # erasing a generic value suppresses it
        if suppress:
            self.suppressed.add(value)
        # Clusters are the components of the remaining assertions, under their oldest.
        parent = {r.id: r.id for r in self.rows}

        def find(x: int) -> int:
            while parent[x] != x:
                x = parent[x]
            return x

        holders: dict[Value, int] = {}
        for r in self.rows:
            for val in (("e", r.email), ("p", r.phone)):
                if val[1] is not None:
                    if val in holders:
                        parent[find(r.id)] = find(holders[val])  # type: ignore[index]
                    holders.setdefault(val, r.id)  # type: ignore[arg-type]
        for e, p in self.links:
            parent[find(holders[("e", e)])] = find(holders[("p", p)])
        oldest: dict[int, int] = {}
        for r in self.rows:
            oldest.setdefault(find(r.id), r.id)
        for r in self.rows:
            primary = oldest[find(r.id)]
            r.linked_id = None if primary == r.id else primary

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


def run_sequence(
    client: FlaskClient, engine: Engine, guards: GuardPolicy, sequence: list[tuple[str, Any]]
) -> Model:
    model = Model()
    for number, (kind, payload) in enumerate(sequence):
        if kind == "events":
            events = [
                Event(f"ev-{number}-{n}", normalize_identifiers(b["email"], b["phoneNumber"]))
                for n, b in enumerate(payload)
            ]
            run_in_transaction(engine, lambda conn, ev=events: apply_events(conn, ev, guards))
            for event in events:
                model.identify(event.identifiers.email, event.identifiers.phone)
        elif kind == "erase":
            response = client.post("/erasures", json=payload)
            assert response.status_code == 200, response.get_data(as_text=True)
            field_name = "email" if "email" in payload else "phoneNumber"
            model.erase(("e" if field_name == "email" else "p", payload[field_name]),
                        payload["suppress"])  # fmt: skip
            persons = response.get_json()["persons"]
            assert all(p == model.view(p["primaryContactId"])["contact"] for p in persons)
        else:
            body = payload
            response = client.post("/identify", json=body)
            ids = normalize_identifiers(body["email"], body["phoneNumber"])
            expected = model.identify(ids.email, ids.phone)
            if expected is None:
                assert response.status_code == 422, response.get_data(as_text=True)
                assert response.get_json()["field"] in ("email", "phoneNumber")
            else:
                assert response.status_code == 200, response.get_data(as_text=True)
                assert response.get_json() == expected, body
    return model


@settings(
    max_examples=60,
    deadline=None,
    # The client/engine fixtures are per test, not per example: each example starts by
    # emptying the tables itself, so sharing them across examples is safe.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(sequence=sequences)
def test_random_sequences_follow_the_model_and_keep_the_invariants(
    settings: Settings, engine: Engine, sequence: list[tuple[str, Any]]
) -> None:
    configured = settings.model_copy(
        update={"generic_threshold": THRESHOLD, "suppression_hash_key": Secret("property-key")}
    )
    reset_contacts(engine)
    with opened_app(configured) as app:
        client = app.test_client()
        model = run_sequence(client, engine, GuardPolicy.from_settings(configured), sequence)
        with engine.connect() as conn:
            assert check_invariants(conn) == []
            stored = [(r.id, r.email, r.phone, r.linked_id) for r in live_rows(conn)]
            assert stored == [(r.id, r.email, r.phone, r.linked_id) for r in model.rows]
            assert stored_links(conn) == model.links
            assert assertion_clusters(conn) == db_clusters(conn)  # I4 over contacts and links
            primaries = live_primaries(conn)
        feed = client.get("/changes?limit=1000").get_json()["changes"]
        assert [c["seq"] for c in feed] == list(range(1, len(feed) + 1))
        assert replay(feed) == primaries
        guards = client.get("/guards").get_json()
        names = {"email": "e", "phoneNumber": "p"}
        assert {(names[g["field"]], g["value"]) for g in guards["generic"]} == model.generic
        # One hash a suppressed email; one a spelling of a suppressed phone ("111", "+111").
        hashes = sum(1 if k == "e" else len(phone_spellings(v)) for k, v in model.suppressed)
        assert guards["suppressed"] == hashes
