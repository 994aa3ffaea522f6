"""Normalization of emails and phone numbers (SPEC.md, "Normalization and bad input").

Pure functions: no I/O, no configuration beyond the arguments.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from identity.errors import InvalidInput

MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART = 64
MAX_RAW_PHONE_LENGTH = 64
MIN_PHONE_DIGITS = 3
MAX_PHONE_DIGITS = 20
#: Distinct (phone, region) pairs whose E.164 form each process remembers (``_e164``).
E164_CACHE_SIZE = 16_384

# Characters a person types between digits; dropped before validation.
_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_PHONE_SHAPE = re.compile(r"\+?[0-9]+")
# Whitespace, control characters and the characters RFC 5322 never allows unquoted
# in a domain. International (UTF-8) local parts and domains are accepted; lone
# surrogates (a JSON "\ud800" escape) are not text and no database can store them.
_FORBIDDEN_IN_EMAIL = re.compile(r"[\s\x00-\x1f\x7f<>\[\](),;:\\\"\ud800-\udfff]")


@dataclass(frozen=True)
class Identifiers:
    """A request's normalized identifiers; at least one is present."""

    email: str | None
    phone: str | None


def normalize_email(value: object) -> str | None:
    """Trim and lower-case an email; None or blank means absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("email must be a string or null", field="email")
    # NFC first: a composed and a decomposed spelling of one address are one key.
    email = unicodedata.normalize("NFC", value.strip()).lower()
    if not email:
        return None
    if len(email) > MAX_EMAIL_LENGTH:
        raise InvalidInput(f"email is longer than {MAX_EMAIL_LENGTH} characters", field="email")
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in domain
        or len(local) > MAX_LOCAL_PART
        or _FORBIDDEN_IN_EMAIL.search(email)
        or "" in domain.split(".")  # an empty label: a.., .a, a.
    ):
        raise InvalidInput(
            "email must look like an address: a local part, one @, a domain", field="email"
        )
    return email


def normalize_phone(value: object, default_region: str | None = None) -> str | None:
    """Normalize a phone given as a string or a non-negative integer; None or blank is absent.

    Separators are dropped and a leading + kept; 3 to 20 digits must remain.
    A number with a leading + or, when ``default_region`` is set, one that parses
    as valid for that region is stored in E.164.
    """
    if value is None:
        return None
    # bool is an int subclass: JSON true/false is a wrong type, not 1/0.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput(
            "phoneNumber must be a string, a non-negative integer or null", field="phoneNumber"
        )
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput("phoneNumber must not be negative", field="phoneNumber")
        if value >= 10**MAX_PHONE_DIGITS:
            raise InvalidInput(
                f"phoneNumber has more than {MAX_PHONE_DIGITS} digits", field="phoneNumber"
            )
        raw = str(value)
    else:
        raw = value.strip()
        if not raw:
            return None
        if len(raw) > MAX_RAW_PHONE_LENGTH:
            raise InvalidInput(
                f"phoneNumber is longer than {MAX_RAW_PHONE_LENGTH} characters",
                field="phoneNumber",
            )
    compact = _PHONE_SEPARATORS.sub("", raw)
    if not _PHONE_SHAPE.fullmatch(compact) or not compact.isascii():
        raise InvalidInput(
            "phoneNumber may hold only digits, spaces, dashes, dots, parentheses and a leading +",
            field="phoneNumber",
        )
    digits = compact.lstrip("+")
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        raise InvalidInput(
            f"phoneNumber must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits",
            field="phoneNumber",
        )
    if compact.startswith("+") or default_region:
        return _e164(compact, default_region) or compact
    return compact


@lru_cache(maxsize=E164_CACHE_SIZE)
def _e164(compact: str, default_region: str | None) -> str | None:
    """The E.164 form of a valid number, else None: phonenumbers' parse and check, ~35 us
    a call, remembered per process (a shop sees the same phones again and again; the
    answer depends on the two arguments and the library's metadata only)."""
    try:
        parsed = phonenumbers.parse(compact, default_region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_valid_number(parsed):
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


def normalize_identifiers(
    email: object, phone: object, default_region: str | None = None
) -> Identifiers:
    """Normalize both identifiers; at least one must remain."""
    identifiers = Identifiers(
        email=normalize_email(email), phone=normalize_phone(phone, default_region)
    )
    if identifiers.email is None and identifiers.phone is None:
        raise InvalidInput("provide email or phoneNumber (at least one, not empty)")
    return identifiers


def phone_spellings(value: object, default_region: str | None = None) -> set[str]:
    """Every form this service may have stored a phone in: as normalized now, as given
    (separators dropped), digits only, with a leading +, and E.164 when it parses (with
    or without the region). Erasure matches all of them (SPEC "Erasure")."""
    normalized = normalize_phone(value, default_region)
    if normalized is None:
        return set()
    raw = str(value).strip() if not isinstance(value, str) else value.strip()
    compact = _PHONE_SEPARATORS.sub("", raw)
    digits = compact.lstrip("+")
    forms = {normalized, compact, digits, "+" + digits}
    for region in {default_region, None}:
        for text in (compact, "+" + digits):
            try:
                parsed = phonenumbers.parse(text, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                forms.add(e164)
                forms.add(e164.lstrip("+"))
                national = str(parsed.national_number)
                forms.add(national)
    return {f for f in forms if MIN_PHONE_DIGITS <= len(f.lstrip("+")) <= MAX_PHONE_DIGITS}
