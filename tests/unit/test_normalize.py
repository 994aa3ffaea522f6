"""SPEC.md "Normalization and bad input" as a table: pure functions, no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity import normalize
from identity.errors import InvalidInput
from identity.normalize import (
    MAX_EMAIL_LENGTH,
    Identifiers,
    normalize_email,
    normalize_identifiers,
    normalize_phone,
)

# --- emails -----------------------------------------------------------------------------

EMAILS_OK = [
    ("lorraine@hillvalley.edu", "lorraine@hillvalley.edu"),
    ("  Lorraine@HillValley.EDU  ", "lorraine@hillvalley.edu"),  # trimmed, lower-cased
    ("\tMcFly@HillValley.edu\n", "mcfly@hillvalley.edu"),
    ("\u00a0doc@brown.io\u2003", "doc@brown.io"),  # unicode whitespace is trimmed too
    ("a@b", "a@b"),  # a local part, one @, a domain: no TLD required
    ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ("ÜSER@Exämple.DE", "üser@exämple.de"),  # internationalized, lower-cased
    ("用户@例子.广告", "用户@例子.广告"),
    ("x" * 64 + "@shop.test", "x" * 64 + "@shop.test"),  # longest local part
]


@pytest.mark.parametrize(("raw", "expected"), EMAILS_OK)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "\t\n"])
def test_email_absent_or_blank_is_none(raw: str | None) -> None:
    assert normalize_email(raw) is None


EMAILS_BAD = [
    "lorraine",  # no @
    "@hillvalley.edu",  # no local part
    "lorraine@",  # no domain
    "a@@b.c",
    "a@b@c.d",  # two @
    "a b@c.d",  # inner whitespace
    "a@b..c",  # empty domain label
    "a@.b",
    "a@b.",
    "<a@b.c>",
    "a,b@c.d",
    "a@b.c;",
    'a"b@c.d',
    "a\\b@c.d",
    "a\x00b@c.d",  # NUL: PostgreSQL text cannot hold it
    "a\x7f@c.d",
    "\ud800@c.d",  # lone surrogate: not encodable, never reaches the database
    "a@\udfff.d",
    "x" * 65 + "@shop.test",  # local part over 64
    "a@" + "b" * MAX_EMAIL_LENGTH,  # over 254 in total
]


@pytest.mark.parametrize("raw", EMAILS_BAD)
def test_email_that_is_not_an_address_is_rejected(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_email(raw)
    assert caught.value.field == "email"
    assert "email" in caught.value.message


def test_email_too_long_says_so() -> None:
    with pytest.raises(InvalidInput, match="longer than 254"):
        normalize_email("a@" + "b" * 253)
    assert normalize_email("a@" + "b" * 252) == "a@" + "b" * 252  # exactly 254


@pytest.mark.parametrize("raw", [5, 1.5, True, ["a@b.c"], {"a": "b"}, b"a@b.c"])
def test_email_of_wrong_type_is_rejected(raw: object) -> None:
    with pytest.raises(InvalidInput, match="email must be a string") as caught:
        normalize_email(raw)
    assert caught.value.field == "email"


# --- phones -----------------------------------------------------------------------------

PHONES_OK = [
    ("123456", "123456"),  # short test numbers are valid
    (123456, "123456"),  # JSON number
    ("123", "123"),  # 3 digits: the minimum
    (123, "123"),
    ("1" * 20, "1" * 20),  # 20 digits: the maximum
    (10**20 - 1, "9" * 20),
    ("  717171 ", "717171"),  # trimmed
    ("415-555-2671", "4155552671"),  # dashes dropped
    ("415.555.2671", "4155552671"),  # dots dropped
    ("(415) 555 2671", "4155552671"),  # parentheses and spaces dropped
    ("415\t555\u00a02671", "4155552671"),  # any whitespace dropped
    ("+123", "+123"),  # leading + kept; not a valid number, so not reformatted
    ("+1 (415) 555-2671", "+14155552671"),  # leading + and a valid number: E.164
    ("+44 20 7946 0958", "+442079460958"),
    ("0123", "0123"),  # leading zeros of a string survive
]


@pytest.mark.parametrize(("raw", "expected"), PHONES_OK)
def test_phone_is_compacted(raw: object, expected: str) -> None:
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_phone_absent_or_blank_is_none(raw: str | None) -> None:
    assert normalize_phone(raw) is None


PHONES_BAD = [
    ("12", "3 to 20 digits"),  # too few digits
    (12, "3 to 20 digits"),
    (0, "3 to 20 digits"),
    ("+12", "3 to 20 digits"),  # the + is not a digit
    ("1" * 21, "3 to 20 digits"),  # too many digits
    ("+" + "1" * 21, "3 to 20 digits"),
    (10**20, "more than 20 digits"),  # JSON number with too many digits
    (-5, "negative"),
    (-123456, "negative"),
    ("12a456", "may hold only"),
    ("12+3456", "may hold only"),  # + only in front
    ("++123", "may hold only"),
    ("+", "may hold only"),
    ("()", "may hold only"),  # nothing but separators
    ("١٢٣٤٥٦", "may hold only"),  # Arabic-Indic digits: ASCII only
    ("１２３４５６", "may hold only"),  # full-width digits
    ("123/456", "may hold only"),
    ("1" * 65, "longer than 64"),  # raw strings are bounded before any work
]


def test_dash_before_digits_is_a_separator_not_a_sign() -> None:
    # Separators are dropped wherever they are, so a string never reads as negative.
    assert normalize_phone("-123456") == "123456"


@pytest.mark.parametrize(("raw", "message"), PHONES_BAD)
def test_phone_that_is_not_a_number_is_rejected(raw: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        normalize_phone(raw)
    assert caught.value.field == "phoneNumber"


@pytest.mark.parametrize("raw", [True, False, 1.5, 123456.0, float("nan"), ["123"], {"n": 1}])
def test_phone_of_wrong_type_is_rejected(raw: object) -> None:
    with pytest.raises(InvalidInput, match="must be a string, a non-negative integer") as caught:
        normalize_phone(raw)
    assert caught.value.field == "phoneNumber"


REGION_CASES = [
    ("(415) 555-2671", "US", "+14155552671"),  # valid for the region: E.164
    ("415.555.2671", "US", "+14155552671"),
    (4155552671, "US", "+14155552671"),  # JSON number too
    ("+1 415 555 2671", "US", "+14155552671"),  # same key however it was typed
    ("123456", "US", "123456"),  # not valid for the region: kept as typed
    ("919191", "US", "919191"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("+44 20 7946 0958", "US", "+442079460958"),  # explicit country wins
    ("(415) 555-2671", None, "4155552671"),  # no region: digits only
]


@pytest.mark.parametrize(("raw", "region", "expected"), REGION_CASES)
def test_default_region_gives_e164(raw: object, region: str | None, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@given(
    digits=st.text(alphabet="0123456789", min_size=3, max_size=15),
    plus=st.booleans(),
    region=st.sampled_from([None, "US", "GB", "DE", "IN"]),
)
def test_the_remembered_e164_form_is_the_one_computed_afresh(
    digits: str, plus: bool, region: str | None
) -> None:
    compact = ("+" if plus else "") + digits
    # The function the memory wraps, called afresh: phonenumbers' parse and check.
    fresh = normalize._e164.__wrapped__(compact, region) if plus or region else None
    expected = fresh or compact
    assert normalize_phone(compact, region) == expected
    assert normalize_phone(compact, region) == expected  # the second time, from memory


def test_a_phone_seen_before_is_not_parsed_again_and_the_memory_is_bounded() -> None:
    normalize._e164.cache_clear()
    for _ in range(3):
        assert normalize_phone("+1 (415) 555-2671") == "+14155552671"
        assert normalize_phone("415 555 2671", "US") == "+14155552671"
    info = normalize._e164.cache_info()
    assert (info.misses, info.hits) == (2, 4)
    assert info.maxsize == normalize.E164_CACHE_SIZE


# --- both -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "phone"),
    [(None, None), ("", ""), ("  ", "\t"), (None, ""), ("", None), ("   ", None)],
)
def test_both_missing_null_or_empty_is_an_error(email: object, phone: object) -> None:
    with pytest.raises(InvalidInput, match="provide email or phoneNumber") as caught:
        normalize_identifiers(email, phone)
    assert caught.value.field is None


def test_identifiers_normalize_both_fields() -> None:
    got = normalize_identifiers(" Doc@Brown.IO ", "(415) 555-2671", "US")
    assert got == Identifiers(email="doc@brown.io", phone="+14155552671")
    assert normalize_identifiers("doc@brown.io", None) == Identifiers("doc@brown.io", None)
    assert normalize_identifiers(None, 123456) == Identifiers(None, "123456")
    assert normalize_identifiers("", "123456") == Identifiers(None, "123456")


def test_an_invalid_field_is_reported_even_when_the_other_is_fine() -> None:
    with pytest.raises(InvalidInput) as caught:
        normalize_identifiers("doc@brown.io", "12")
    assert caught.value.field == "phoneNumber"
    with pytest.raises(InvalidInput) as caught:
        normalize_identifiers("nope", "123456")
    assert caught.value.field == "email"


def test_email_composed_and_decomposed_spellings_are_one_key() -> None:
    # "é" as one code point and as "e" + combining acute accent (NFC vs NFD).
    composed = normalize_email("jos\u00e9@shop.test")
    decomposed = normalize_email("JOSE\u0301@shop.test")
    assert composed == decomposed == "jos\u00e9@shop.test"
