"""The pure guard policy (SPEC "Guards against junk and shared values"): the default blocked
patterns, the order of the checks, the generic threshold and configured patterns. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from identity.guards.policy import (
    BLOCKED,
    ERASED,
    GENERIC,
    SUPPRESSED,
    GuardPolicy,
    Ignored,
    Marks,
    Screened,
    partners_on_record,
    refuse_all_ignored,
    screen,
    split_patterns,
)
from identity.normalize import Identifiers, normalize_email, normalize_phone
from identity.settings import Settings, SettingsError

DEFAULT = GuardPolicy()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def phone_blocked(raw: str, policy: GuardPolicy = DEFAULT) -> bool:
    phone = normalize_phone(raw, None)
    assert phone is not None
    return policy.is_blocked(("p", phone))


def email_blocked(raw: str, policy: GuardPolicy = DEFAULT) -> bool:
    email = normalize_email(raw)
    assert email is not None
    return policy.is_blocked(("e", email))


def reasons(screened: Screened) -> list[tuple[str, str]]:
    return [(i.field, i.reason) for i in screened.ignored]


# --- The default blocked patterns: exactly SPEC's list, nothing broader -------------------


@pytest.mark.parametrize(
    "phone",
    [
        "0000000",  # one digit 7 times: the shortest run blocked
        "9999999999",
        "1111111",
        "00000000000000000000",  # 20 digits, the longest phone
        "000-000-0000",  # separators go before the check (normalized values)
        "(777) 777-7777",
        "1234567890",
        "0123456789",
        "123-456-7890",
    ],
)
def test_default_blocked_phones(phone: str) -> None:
    assert phone_blocked(phone)


@pytest.mark.parametrize(
    "phone",
    [
        "123456",  # SPEC's worked examples stay valid
        "7654321",
        "919191",
        "717171",
        "000000",  # one digit 6 times: below the run of 7
        "999",
        "0000001",  # a run of 7 that is not the whole number
        "10000000",
        "12345678901",  # the ten-digit run inside a longer number
        "11234567890",
        "123456789",
        "01234567890",
        "9876543210",
        "+0000000",  # a leading + is not a digit: not "one digit repeated"
    ],
)
def test_phones_the_defaults_leave_alone(phone: str) -> None:
    assert not phone_blocked(phone)


@pytest.mark.parametrize(
    "email",
    [
        "null@shop.test",
        "none@shop.test",
        "noreply@shop.test",
        "no-reply@shop.test",
        "NoReply@Shop.Test",  # lower-cased before the check
        "test@test.com",
        "anyone@example.com",
        "a@example.org",
        "x.y+z@example.net",
    ],
)
def test_default_blocked_emails(email: str) -> None:
    assert email_blocked(email)


@pytest.mark.parametrize(
    "email",
    [
        "null.x@shop.test",  # a local part that starts like junk
        "nullx@shop.test",
        "xnull@shop.test",
        "nobody@shop.test",
        "no_reply@shop.test",
        "a@example.co",  # not example.com
        "a@example.com.au",
        "a@myexample.com",
        "a@sub.example.com",  # only the addresses at example.com itself
        "test@test.co",
        "test2@test.com",
        "tester@test.com",
        "test@shop.test",
        "lorraine@hillvalley.edu",
    ],
)
def test_emails_the_defaults_leave_alone(email: str) -> None:
    assert not email_blocked(email)


def test_the_defaults_are_listed_per_field() -> None:
    listing = DEFAULT.blocked_listing()
    assert set(listing) == {"email", "phoneNumber"}
    assert len(listing["email"]) == 3 and len(listing["phoneNumber"]) == 3


# --- Configured patterns -------------------------------------------------------------------


def policy_of(**env: str) -> GuardPolicy:
    return GuardPolicy.from_settings(Settings.from_env(env, dotenv_path=None))


def test_configured_patterns_extend_the_defaults() -> None:
    policy = policy_of(BLOCKED_PHONES=r"555\d{4}", BLOCKED_EMAILS=r".+@shop\.invalid")
    assert phone_blocked("5551234", policy)
    assert not phone_blocked("55512345", policy)  # a full match, not a search
    assert email_blocked("a@shop.invalid", policy)
    assert phone_blocked("0000000", policy) and email_blocked("a@example.com", policy)


def test_blocked_defaults_off_replaces_the_list() -> None:
    policy = policy_of(BLOCKED_DEFAULTS="off", BLOCKED_PHONES=r"555\d{4}")
    assert phone_blocked("5551234", policy)
    assert not phone_blocked("0000000", policy)
    assert not email_blocked("a@example.com", policy)
    assert policy.blocked_listing() == {"email": [], "phoneNumber": [r"555\d{4}"]}


def test_patterns_are_separated_by_newlines_or_double_semicolons() -> None:
    assert split_patterns("a\nb;;c\n\n ;; d ") == ["a", "b", "c", "d"]
    policy = policy_of(
        BLOCKED_DEFAULTS="off", BLOCKED_EMAILS="a@shop\\.test;;b@shop\\.test\nc@x\\.io"
    )
    assert policy.blocked_listing()["email"] == [r"a@shop\.test", r"b@shop\.test", r"c@x\.io"]
    assert email_blocked("c@x.io", policy) and not email_blocked("d@x.io", policy)


@pytest.mark.parametrize("name", ["BLOCKED_PHONES", "BLOCKED_EMAILS"])
def test_a_malformed_pattern_refuses_to_start_naming_its_variable(name: str) -> None:
    with pytest.raises(SettingsError, match=name) as raised:
        Settings.from_env({name: r"\d+;;(unclosed"}, dotenv_path=None)
    assert "(unclosed" in str(raised.value)


def test_blocked_defaults_takes_on_or_off_only() -> None:
    with pytest.raises(SettingsError, match="BLOCKED_DEFAULTS"):
        Settings.from_env({"BLOCKED_DEFAULTS": "maybe"}, dotenv_path=None)


# --- screen: the order of the checks -------------------------------------------------------

E, P = "marty@shop.test", "5550101"


def test_nothing_ignored_passes_the_request_through() -> None:
    screened = screen(Identifiers(E, P), DEFAULT, Marks())
    assert screened == Screened(Identifiers(E, P))


def test_a_blocked_value_is_left_out_and_reported() -> None:
    screened = screen(Identifiers(E, "0000000"), DEFAULT, Marks())
    assert screened.identifiers == Identifiers(E, None)
    assert reasons(screened) == [("phoneNumber", BLOCKED)]


def test_blocked_comes_before_suppressed_and_generic() -> None:
    value = ("p", "0000000")
    marks = Marks(generic={value}, suppressed={value})
    assert reasons(screen(Identifiers(E, "0000000"), DEFAULT, marks)) == [("phoneNumber", BLOCKED)]


def test_suppressed_comes_before_generic_and_is_reported_as_blocked() -> None:
    marks = Marks(generic={("e", E)}, suppressed={("e", E)})
    screened = screen(Identifiers(E, P), DEFAULT, marks)
    assert reasons(screened) == [("email", SUPPRESSED)]
    assert [i.to_json() for i in screened.ignored] == [{"field": "email", "reason": "blocked"}]
    assert screened.identifiers == Identifiers(None, P)


def test_generic_values_are_ignored() -> None:
    screened = screen(Identifiers(E, P), DEFAULT, Marks(generic={("p", P)}))
    assert screened.identifiers == Identifiers(E, None)
    assert [i.to_json() for i in screened.ignored] == [{"field": "phoneNumber", "reason": GENERIC}]


def test_an_event_drops_a_value_erased_after_it_was_accepted() -> None:
    marks = Marks(erased_at={("e", E): T0})
    before = screen(Identifiers(E, P), DEFAULT, marks, accepted_at=T0 - timedelta(seconds=1))
    assert reasons(before) == [("email", ERASED)]
    assert before.identifiers == Identifiers(None, P)
    # Accepted after the erasure: a new assertion, applied in full.
    after = screen(Identifiers(E, P), DEFAULT, marks, accepted_at=T0 + timedelta(seconds=1))
    assert after.ignored == () and after.identifiers == Identifiers(E, P)
    # /identify has no acceptance time: erasure alone does not ignore a value.
    assert screen(Identifiers(E, P), DEFAULT, marks).ignored == ()


def test_erased_comes_after_suppressed_and_before_generic() -> None:
    value = ("e", E)
    accepted = T0 - timedelta(seconds=1)
    marks = Marks(generic={value}, erased_at={value: T0})
    assert reasons(screen(Identifiers(E, P), DEFAULT, marks, accepted_at=accepted)) == [
        ("email", ERASED)
    ]
    marks.suppressed.add(value)
    assert reasons(screen(Identifiers(E, P), DEFAULT, marks, accepted_at=accepted)) == [
        ("email", SUPPRESSED)
    ]


def test_every_value_ignored_leaves_nothing_and_names_the_first_field() -> None:
    screened = screen(Identifiers("a@example.com", "0000000"), DEFAULT, Marks())
    assert screened.identifiers is None
    assert reasons(screened) == [("email", BLOCKED), ("phoneNumber", BLOCKED)]
    error = refuse_all_ignored(screened)
    assert error.code == "all_ignored" and error.field == "email"
    assert "blocked email" in str(error)


def test_the_refusal_never_says_suppressed() -> None:
    screened = screen(Identifiers(E, None), DEFAULT, Marks(suppressed={("e", E)}))
    assert screened.identifiers is None
    assert "suppressed" not in str(refuse_all_ignored(screened))


# --- screen: the generic threshold ---------------------------------------------------------


def partners(n: int) -> set[str]:
    return {f"c{i}@shop.test" for i in range(n)}


def test_the_request_bringing_partner_threshold_plus_one_marks_the_value() -> None:
    policy = GuardPolicy(generic_threshold=3)
    marks = Marks(partners={("p", P): partners(2)})
    third = screen(Identifiers("c2@shop.test", P), policy, marks)
    assert third.ignored == () and third.newly_generic == ()
    assert marks.partners[("p", P)] == partners(3)  # updated as if applied
    fourth = screen(Identifiers("c3@shop.test", P), policy, marks)
    assert fourth.identifiers == Identifiers("c3@shop.test", None)  # applied without the phone
    assert fourth.ignored == (Ignored("phoneNumber", GENERIC),)
    assert fourth.newly_generic == ((("p", P), 4),)
    assert ("p", P) in marks.generic
    assert marks.partners[("p", P)] == partners(3)  # the ignored pair is not a partner
    fifth = screen(Identifiers("c4@shop.test", P), policy, marks)
    assert fifth.newly_generic == () and reasons(fifth) == [("phoneNumber", GENERIC)]


def test_a_partner_already_counted_never_crosses() -> None:
    policy = GuardPolicy(generic_threshold=3)
    marks = Marks(partners={("p", P): partners(3)})
    again = screen(Identifiers("c1@shop.test", P), policy, marks)
    assert again.ignored == () and again.newly_generic == ()


def test_one_value_requests_never_count_or_cross() -> None:
    policy = GuardPolicy(generic_threshold=1)
    marks = Marks(partners={("p", P): partners(5)})
    assert screen(Identifiers(None, P), policy, marks).newly_generic == ()


def test_a_partner_that_is_ignored_does_not_count() -> None:
    policy = GuardPolicy(generic_threshold=2)
    marks = Marks(partners={("p", P): partners(2)}, suppressed={("e", "gone@shop.test")})
    for email in ("a@example.com", "gone@shop.test"):  # blocked, suppressed
        screened = screen(Identifiers(email, P), policy, marks)
        assert screened.newly_generic == ()
        assert screened.identifiers == Identifiers(None, P)
    marks.generic.add(("e", "shared@shop.test"))
    assert screen(Identifiers("shared@shop.test", P), policy, marks).newly_generic == ()
    assert marks.partners[("p", P)] == partners(2)


def test_the_phone_is_checked_before_the_email() -> None:
    # Both would cross: the phone is marked, and the email, left alone, counts nothing.
    policy = GuardPolicy(generic_threshold=2)
    email = "shared@shop.test"
    marks = Marks(partners={("p", P): partners(2), ("e", email): {"111", "222"}})
    screened = screen(Identifiers(email, P), policy, marks)
    assert screened.newly_generic == ((("p", P), 3),)
    assert screened.identifiers == Identifiers(email, None)
    assert marks.generic == {("p", P)}
    assert marks.partners[("e", email)] == {"111", "222"}


def test_the_email_crosses_when_the_phone_does_not() -> None:
    policy = GuardPolicy(generic_threshold=2)
    email = "shared@shop.test"
    marks = Marks(partners={("e", email): {"111", "222"}})
    screened = screen(Identifiers(email, P), policy, marks)
    assert screened.newly_generic == ((("e", email), 3),)
    assert screened.identifiers == Identifiers(None, P)
    assert reasons(screened) == [("email", GENERIC)]


def test_a_threshold_of_zero_turns_generic_marking_off() -> None:
    policy = GuardPolicy(generic_threshold=0)
    marks = Marks(partners={("p", P): partners(1000)})
    screened = screen(Identifiers("new@shop.test", P), policy, marks)
    assert screened == Screened(Identifiers("new@shop.test", P))
    assert policy_of(GENERIC_THRESHOLD="0").generic_threshold == 0
    assert policy_of().generic_threshold == 20


def test_a_batch_screens_its_events_in_order_over_one_marks() -> None:
    # The default threshold: 21 distinct emails on one phone; the 21st marks it.
    marks = Marks()
    outcomes = [screen(Identifiers(e, P), DEFAULT, marks) for e in sorted(partners(25))]
    crossed = [n for n, s in enumerate(outcomes) if s.newly_generic]
    assert crossed == [20]
    assert all(s.ignored == () for s in outcomes[:20])
    assert all(reasons(s) == [("phoneNumber", GENERIC)] for s in outcomes[20:])
    assert len(marks.partners[("p", P)]) == 20


def test_partners_on_record_are_the_other_values_held_with_each_value() -> None:
    pairs = [
        ("a@shop.test", "111"),
        ("b@shop.test", "111"),
        ("a@shop.test", "222"),
        ("a@shop.test", None),  # a contact with one value partners nothing
        ("c@shop.test", "333"),
    ]
    wanted = [("e", "a@shop.test"), ("p", "111"), ("p", "999")]
    assert partners_on_record(wanted, pairs) == {
        ("e", "a@shop.test"): {"111", "222"},
        ("p", "111"): {"a@shop.test", "b@shop.test"},
        ("p", "999"): set(),
    }
