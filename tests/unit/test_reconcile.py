"""SPEC.md rules 1-4 and the answer's ordering, as pure decisions over plain rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from identity.normalize import Identifiers
from identity.reconcile import (
    ClusterView,
    Decision,
    Insert,
    Row,
    build_view,
    decide,
    decide_held,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(
    id: int, email: str | None, phone: str | None, linked_id: int | None = None, t: float = 0
) -> Row:
    return Row(id=id, email=email, phone=phone, linked_id=linked_id, created_at=at(t if t else id))


def ids(email: str | None = None, phone: str | None = None) -> Identifiers:
    return Identifiers(email=email, phone=phone)


# --- rule 1 ----------------------------------------------------------------------------


def test_rule1_nothing_matches_inserts_a_primary() -> None:
    decision = decide(ids("a@x.io", "111"), roots=[], members=[])
    assert decision == Decision(primary_id=None, demote=(), insert=Insert.PRIMARY)
    assert decision.writes


def test_rule1_email_only_and_phone_only() -> None:
    assert decide(ids("a@x.io"), [], []).insert is Insert.PRIMARY
    assert decide(ids(phone="111"), [], []).insert is Insert.PRIMARY


# --- rule 2 ----------------------------------------------------------------------------


def test_rule2_new_email_in_one_cluster_inserts_a_secondary() -> None:
    primary = row(1, "lorraine@hillvalley.edu", "123456")
    decision = decide(ids("mcfly@hillvalley.edu", "123456"), [primary], [primary])
    assert decision == Decision(primary_id=1, demote=(), insert=Insert.SECONDARY)


def test_rule2_new_phone_in_one_cluster_inserts_a_secondary() -> None:
    primary = row(1, "a@x.io", "111")
    second = row(2, "b@x.io", "111", linked_id=1)
    decision = decide(ids("b@x.io", "222"), [primary], [primary, second])
    assert decision == Decision(primary_id=1, demote=(), insert=Insert.SECONDARY)


def test_rule2_is_decided_against_the_whole_cluster_not_the_matching_row() -> None:
    # The email matches row 2, the phone is held by row 1: nothing new in the cluster.
    primary = row(1, "a@x.io", "111")
    second = row(2, "b@x.io", "111", linked_id=1)
    third = row(3, "b@x.io", "222", linked_id=1)
    decision = decide(ids("a@x.io", "222"), [primary], [primary, second, third])
    assert decision.insert is Insert.NOTHING
    assert not decision.demote
    # ... but no contact holds the pair (a@x.io, 222): rule 4 records a link for it.
    assert decision.link and decision.writes


def test_rule4_writes_nothing_when_a_contact_or_a_link_holds_the_pair() -> None:
    primary = row(1, "a@x.io", "111")
    second = row(2, "b@x.io", "222", linked_id=1)
    third = row(3, "b@x.io", "111", linked_id=1)
    held = decide(ids("b@x.io", "111"), [primary], [primary, second, third])
    assert held == Decision(primary_id=1, demote=(), insert=Insert.NOTHING, link=False)
    assert not held.writes
    # (a@x.io, 222) is held by no contact: a link on record makes it a pure read too.
    linked = decide(ids("a@x.io", "222"), [primary], [primary, second], pair_linked=True)
    assert not linked.writes
    # One identifier never records a link.
    assert not decide(ids("a@x.io", None), [primary], [primary, second]).writes


def test_rule3_always_records_a_link_for_its_pair() -> None:
    one = row(1, "a@x.io", "111")
    two = row(2, "b@x.io", "222")
    decision = decide(ids("a@x.io", "222"), [one, two], [one, two])
    assert decision == Decision(primary_id=1, demote=(2,), insert=Insert.NOTHING, link=True)


# --- rule 3 ----------------------------------------------------------------------------


def test_rule3_two_clusters_merge_under_the_older_primary() -> None:
    george = row(1, "george@hillvalley.edu", "919191")
    biff = row(2, "biffsucks@hillvalley.edu", "717171")
    decision = decide(ids("george@hillvalley.edu", "717171"), [george, biff], [george, biff])
    assert decision == Decision(primary_id=1, demote=(2,), insert=Insert.NOTHING, link=True)
    assert decision.writes


def test_rule3_order_of_roots_does_not_matter() -> None:
    george = row(1, "george@hillvalley.edu", "919191")
    biff = row(2, "biffsucks@hillvalley.edu", "717171")
    decision = decide(ids("george@hillvalley.edu", "717171"), [biff, george], [biff, george])
    assert decision.primary_id == 1
    assert decision.demote == (2,)


def test_rule3_winner_is_the_smaller_created_at_not_the_smaller_id() -> None:
    # Clocks of app servers and id allocation can disagree: createdAt decides first.
    late_low_id = row(1, "a@x.io", "111", t=50)
    early_high_id = row(2, "b@x.io", "222", t=10)
    decision = decide(
        ids("a@x.io", "222"), [late_low_id, early_high_id], [late_low_id, early_high_id]
    )
    assert decision.primary_id == 2
    assert decision.demote == (1,)


def test_rule3_equal_created_at_is_broken_by_id() -> None:
    a = row(7, "a@x.io", "111", t=5)
    b = row(3, "b@x.io", "222", t=5)
    decision = decide(ids("a@x.io", "222"), [a, b], [a, b])
    assert decision.primary_id == 3
    assert decision.demote == (7,)


def test_rule3_several_roots_are_all_demoted_in_ascending_order() -> None:
    roots = [row(9, "c@x.io", None, t=30), row(4, None, "111", t=10), row(6, "a@x.io", None, t=20)]
    decision = decide(ids("a@x.io", "111"), roots, roots)
    assert decision.primary_id == 4
    assert decision.demote == (6, 9)


# --- rule 4 ----------------------------------------------------------------------------


def test_rule4_nothing_new_in_one_cluster_writes_nothing() -> None:
    primary = row(1, "lorraine@hillvalley.edu", "123456")
    second = row(2, "mcfly@hillvalley.edu", "123456", linked_id=1)
    members = [primary, second]
    for request in (
        ids(phone="123456"),
        ids("lorraine@hillvalley.edu"),
        ids("mcfly@hillvalley.edu"),
        ids("mcfly@hillvalley.edu", "123456"),
        ids("lorraine@hillvalley.edu", "123456"),
    ):
        decision = decide(request, [primary], members)
        assert decision == Decision(primary_id=1, demote=(), insert=Insert.NOTHING), request
        assert not decision.writes


def test_absent_identifier_is_never_new() -> None:
    # A cluster holding no phone at all: an email-only request brings nothing new.
    primary = row(1, "a@x.io", None)
    assert decide(ids("a@x.io"), [primary], [primary]).insert is Insert.NOTHING
    # ... but a phone it does not hold is new.
    assert decide(ids("a@x.io", "111"), [primary], [primary]).insert is Insert.SECONDARY


# --- the answer ------------------------------------------------------------------------


def test_view_of_the_first_worked_example() -> None:
    rows = [
        row(1, "lorraine@hillvalley.edu", "123456"),
        row(2, "mcfly@hillvalley.edu", "123456", linked_id=1),
    ]
    view = build_view(1, rows)
    assert view == ClusterView(
        primary_id=1,
        emails=("lorraine@hillvalley.edu", "mcfly@hillvalley.edu"),
        phone_numbers=("123456",),
        secondary_ids=(2,),
    )
    assert view.to_json() == {
        "contact": {
            "primaryContactId": 1,
            "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
            "phoneNumbers": ["123456"],
            "secondaryContactIds": [2],
        }
    }
    assert list(view.to_json()["contact"]) == [  # type: ignore[call-overload]
        "primaryContactId",
        "emails",
        "phoneNumbers",
        "secondaryContactIds",
    ]


def test_view_after_a_merge_of_the_second_worked_example() -> None:
    rows = [
        row(2, "biffsucks@hillvalley.edu", "717171", linked_id=1),
        row(1, "george@hillvalley.edu", "919191"),
    ]
    view = build_view(1, rows)
    assert view.emails == ("george@hillvalley.edu", "biffsucks@hillvalley.edu")
    assert view.phone_numbers == ("919191", "717171")
    assert view.secondary_ids == (2,)


def test_view_puts_the_primarys_values_first_even_when_it_is_not_the_oldest_listed() -> None:
    # The primary's own values lead; the rest follow row creation (createdAt, id) order,
    # not id order and not input order.
    rows = [
        row(5, "e@x.io", "555", linked_id=3, t=40),
        row(4, "d@x.io", "444", linked_id=3, t=30),
        row(9, "c@x.io", "999", linked_id=3, t=20),  # created before 4 and 5 despite its id
        row(3, "p@x.io", "333", t=10),
    ]
    view = build_view(3, rows)
    assert view.emails == ("p@x.io", "c@x.io", "d@x.io", "e@x.io")
    assert view.phone_numbers == ("333", "999", "444", "555")
    assert view.secondary_ids == (4, 5, 9)  # ascending, whatever the creation order


def test_view_values_are_distinct_and_nulls_skipped() -> None:
    rows = [
        row(1, None, "111"),  # primary without an email
        row(2, "b@x.io", "111", linked_id=1),
        row(3, "b@x.io", None, linked_id=1),
        row(4, "a@x.io", "222", linked_id=1),
    ]
    view = build_view(1, rows)
    assert view.emails == ("b@x.io", "a@x.io")  # the primary has none: creation order
    assert view.phone_numbers == ("111", "222")
    assert view.secondary_ids == (2, 3, 4)


def test_view_of_a_lone_primary() -> None:
    view = build_view(8, [row(8, None, "123")])
    assert view.to_json() == {
        "contact": {
            "primaryContactId": 8,
            "emails": [],
            "phoneNumbers": ["123"],
            "secondaryContactIds": [],
        }
    }


def test_row_age_is_created_at_then_id() -> None:
    assert row(2, "a", None, t=1).age < row(1, "a", None, t=2).age
    assert row(1, "a", None, t=3).age < row(2, "a", None, t=3).age


# --- decide_held: the same rules when SQL already said what the clusters hold ------------


def test_decide_held_rules() -> None:
    a = row(1, "a@x.io", "111")
    b = row(2, "b@x.io", "222")
    assert decide_held(ids("a@x.io"), [], held_email=False, held_phone=False) == Decision(
        None, (), Insert.PRIMARY
    )
    assert decide_held(ids("a@x.io", "999"), [a], held_email=True, held_phone=False) == Decision(
        1, (), Insert.SECONDARY
    )
    assert decide_held(ids("a@x.io", "222"), [b, a], held_email=True, held_phone=True) == Decision(
        1, (2,), Insert.NOTHING, link=True
    )
    assert decide_held(ids(phone="111"), [a], held_email=False, held_phone=True) == Decision(
        1, (), Insert.NOTHING
    )


_values = st.sampled_from(["a", "b", "c", None])


@st.composite
def cluster_states(draw: st.DrawFn) -> tuple[Identifiers, list[Row], list[Row]]:
    """Some roots, each with a few members, and a request (any shape decide accepts)."""
    roots, members, next_id = [], [], 1
    for _ in range(draw(st.integers(0, 3))):
        root_id = next_id
        root = Row(root_id, draw(_values), draw(_values), None, at(draw(st.integers(0, 9))))
        roots.append(root)
        members.append(root)
        next_id += 1
        for _ in range(draw(st.integers(0, 3))):
            members.append(Row(next_id, draw(_values), draw(_values), root_id, at(10 + next_id)))
            next_id += 1
    request = Identifiers(draw(_values), draw(_values))
    return request, roots, members


@given(cluster_states())
def test_decide_held_agrees_with_decide(state: tuple[Identifiers, list[Row], list[Row]]) -> None:
    request, roots, members = state
    held_email = any(m.email == request.email for m in members)
    held_phone = any(m.phone == request.phone for m in members)
    held_pair = any((m.email, m.phone) == (request.email, request.phone) for m in members)
    assert decide_held(
        request, roots, held_email=held_email, held_phone=held_phone, held_pair=held_pair
    ) == decide(request, roots, members)
