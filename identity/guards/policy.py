"""Which values are ignored, and why: blocked patterns, suppressed and generic values.

``GuardPolicy`` is built once from Settings (patterns compiled once). ``screen`` is the
pure decision for one request over ``Marks``, what the database says about its values
(read under their identifier locks by ``identity.guards.store``): checks run in the order
blocked, suppressed, generic, and a partner value that is itself ignored does not count
(SPEC "Guards against junk and shared values").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from identity import observe
from identity.errors import InvalidInput
from identity.normalize import Identifiers

if TYPE_CHECKING:
    from identity.settings import Settings

Value = tuple[str, str]  # ("e", email) or ("p", phone)

BLOCKED, SUPPRESSED, GENERIC, ERASED = "blocked", "suppressed", "generic", "erased"
FIELD = {"e": "email", "p": "phoneNumber"}

#: The defaults: the usual junk, nothing broader (docs/DECISIONS.md says why each).
DEFAULT_BLOCKED_PHONES = (
    r"(\d)\1{6,}",  # one digit repeated 7+ times: 0000000, 9999999999
    r"1234567890",
    r"0123456789",
)
DEFAULT_BLOCKED_EMAILS = (
    r"(null|none|noreply|no-reply)@.+",
    r"test@test\.com",
    r".+@example\.(com|org|net)",
)


class GuardSettingsError(ValueError):
    pass


def compile_patterns(name: str, patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            raise GuardSettingsError(f"{name}: pattern {pattern!r} is not valid: {error}") from None
    return tuple(compiled)


def split_patterns(raw: str) -> list[str]:
    """BLOCKED_EMAILS / BLOCKED_PHONES: patterns separated by newlines or ``;;``."""
    return [p.strip() for p in re.split(r"\n|;;", raw) if p.strip()]


@dataclass(frozen=True)
class GuardPolicy:
    blocked_emails: tuple[re.Pattern[str], ...] = compile_patterns("", DEFAULT_BLOCKED_EMAILS)
    blocked_phones: tuple[re.Pattern[str], ...] = compile_patterns("", DEFAULT_BLOCKED_PHONES)
    generic_threshold: int = 20  # 0: off
    configured_key: str = ""  # SUPPRESSION_HASH_KEY
    erased_retention: timedelta = timedelta(days=7)

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardPolicy:
        defaults_e = DEFAULT_BLOCKED_EMAILS if settings.blocked_defaults else ()
        defaults_p = DEFAULT_BLOCKED_PHONES if settings.blocked_defaults else ()
        return cls(
            blocked_emails=compile_patterns(
                "BLOCKED_EMAILS", [*defaults_e, *split_patterns(settings.blocked_emails)]
            ),
            blocked_phones=compile_patterns(
                "BLOCKED_PHONES", [*defaults_p, *split_patterns(settings.blocked_phones)]
            ),
            generic_threshold=settings.generic_threshold,
            configured_key=settings.suppression_hash_key.get(),
            erased_retention=timedelta(days=settings.erased_hash_retention_days),
        )

    @cached_property
    def _blocked(self) -> dict[str, tuple[re.Pattern[str], ...]]:
        """Each field's patterns as one alternation where they combine: ``fullmatch`` of
        ``(?:a)|(?:b)`` is true exactly when one of them full-matches (the engine
        backtracks into the next alternative until the whole value is consumed), in one
        call per value instead of one per pattern. The one pattern with groups (the
        defaults' repeated digit, ``(\\d)\\1{6,}``) goes first, so its backreference still
        names its own group; patterns that cannot be combined so (groups in more than one,
        a global flag such as ``(?i)``) stay as they are."""

        def one(patterns: tuple[re.Pattern[str], ...]) -> tuple[re.Pattern[str], ...]:
            grouped = [p for p in patterns if p.groups]
            if len(patterns) < 2 or len(grouped) > 1:
                return patterns
            ordered = grouped + [p for p in patterns if not p.groups]
            try:
                return (re.compile("|".join(f"(?:{p.pattern})" for p in ordered)),)
            except re.error:
                return patterns

        return {"e": one(self.blocked_emails), "p": one(self.blocked_phones)}

    def is_blocked(self, value: Value) -> bool:
        # A loop, not any() over a generator: called for every value of every event.
        for pattern in self._blocked[value[0]]:  # noqa: SIM110
            if pattern.fullmatch(value[1]):
                return True
        return False

    def blocked_listing(self) -> dict[str, list[str]]:
        return {
            "email": [p.pattern for p in self.blocked_emails],
            "phoneNumber": [p.pattern for p in self.blocked_phones],
        }


@dataclass(frozen=True)
class Ignored:
    field: str  # "email" | "phoneNumber"
    reason: str  # blocked | suppressed | generic | erased

    def to_json(self) -> dict[str, str]:
        # A suppressed value is reported as blocked: the answer must not reveal that
        # someone asked to be forgotten.
        reason = BLOCKED if self.reason == SUPPRESSED else self.reason
        return {"field": self.field, "reason": reason}


@dataclass
class Marks:
    """What the database says about a request's values, read under their locks."""

    generic: set[Value] = field(default_factory=set)
    suppressed: set[Value] = field(default_factory=set)
    erased_at: dict[Value, datetime] = field(default_factory=dict)
    #: value -> its direct partners of the other kind (contacts and links): at most
    #: threshold + baseline + 1 of them (enough to decide a crossing) for a request; all
    #: of them for an event batch (``partners_on_record``), which leaves out the values
    #: whose every pair in the batch is on record already (they cannot cross)
    partners: dict[Value, set[str]] = field(default_factory=dict)
    #: a value whose generic mark an operator cleared -> the partners it had then: it may
    #: gain GENERIC_THRESHOLD more before it is marked again
    baseline: dict[Value, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Screened:
    identifiers: Identifiers | None  # None: every value was ignored
    ignored: tuple[Ignored, ...] = ()
    newly_generic: tuple[tuple[Value, int], ...] = ()  # (value, partners counted)


def record_ignored(conn: Any, screened: Screened) -> None:
    """Count what a guard left out (metrics), once the transaction commits."""
    for item in screened.ignored:
        observe.record(conn, observe.IGNORED, field=item.field, reason=item.reason)
    for _ in screened.newly_generic:
        observe.record(conn, observe.GENERIC_MARKED)


def values_of(identifiers: Identifiers) -> list[Value]:
    out: list[Value] = []
    if identifiers.email is not None:
        out.append(("e", identifiers.email))
    if identifiers.phone is not None:
        out.append(("p", identifiers.phone))
    return out


def partners_on_record(
    values: Iterable[Value], pairs: Iterable[tuple[str | None, str | None]]
) -> dict[Value, set[str]]:
    """Each of ``values``' direct partners among ``pairs``, the (email, phone) of live
    contacts and links: ``S(v)`` of docs/ARCHITECTURE.md ("Guards and the locks") when
    ``pairs`` holds every contact and link that holds ``v``.

    An event batch counts its partners this way, from the rows it reads anyway (every
    live contact holding one of its values) and the links of its pairs not on record.
    """
    out: dict[Value, set[str]] = {v: set() for v in values}
    for email, phone in pairs:
        if email is None or phone is None:
            continue
        if ("e", email) in out:
            out[("e", email)].add(phone)
        if ("p", phone) in out:
            out[("p", phone)].add(email)
    return out


def screen(
    identifiers: Identifiers,
    policy: GuardPolicy,
    marks: Marks,
    *,
    accepted_at: datetime | None = None,
    blocked: Collection[Value] | None = None,
) -> Screened:
    """Which of the request's values are ignored, and which the request marks generic.

    Updates ``marks`` as if the request were applied (a batch screens its events in order
    over one ``Marks``). ``accepted_at``: an event's acceptance time; a value erased
    after it is dropped (the event was in flight during the erasure). ``blocked``: the
    values among the request's that ``policy`` blocks, when the caller matched them
    already (a batch matches each of its values once); None: match them here.
    """
    kept: list[Value] = []
    ignored: list[Ignored] = []
    for value in values_of(identifiers):
        reason = None
        if value in blocked if blocked is not None else policy.is_blocked(value):
            reason = BLOCKED
        elif value in marks.suppressed:
            reason = SUPPRESSED
        elif accepted_at is not None and marks.erased_at.get(value, accepted_at) > accepted_at:
            reason = ERASED
        elif value in marks.generic:
            reason = GENERIC
        if reason is None:
            kept.append(value)
        else:
            ignored.append(Ignored(FIELD[value[0]], reason))
    newly: list[tuple[Value, int]] = []
    if len(kept) == 2 and policy.generic_threshold > 0:
        # Phone first: the shared value is most often a shop's counter phone.
        for value, partner in ((kept[1], kept[0]), (kept[0], kept[1])):
            if partner not in kept:  # the partner was just marked generic itself
                continue
            known = marks.partners.setdefault(value, set())
            allowed = policy.generic_threshold + marks.baseline.get(value, 0)
            if partner[1] not in known and len(known) + 1 > allowed:
                marks.generic.add(value)
                newly.append((value, len(known) + 1))
                kept.remove(value)
                ignored.append(Ignored(FIELD[value[0]], GENERIC))
    if len(kept) == 2:
        marks.partners.setdefault(kept[0], set()).add(kept[1][1])
        marks.partners.setdefault(kept[1], set()).add(kept[0][1])
    if not ignored:  # nothing left out: the request as it came (most requests)
        return Screened(identifiers)
    if not kept:
        return Screened(None, tuple(ignored), tuple(newly))
    email = next((v for k, v in kept if k == "e"), None)
    phone = next((v for k, v in kept if k == "p"), None)
    return Screened(Identifiers(email=email, phone=phone), tuple(ignored), tuple(newly))


@dataclass(frozen=True)
class AllIgnored:
    """The outcome of a request whose every value was ignored: nothing written but the
    generic marks it caused; the API answers 422."""

    screened: Screened

    def error(self) -> InvalidInput:
        return refuse_all_ignored(self.screened)


class AllValuesIgnored(InvalidInput):
    """Every value of the request was ignored by a guard (maps to 422)."""

    code = "all_ignored"


def refuse_all_ignored(screened: Screened) -> InvalidInput:
    first = screened.ignored[0]
    return AllValuesIgnored(
        f"every value of the request is ignored ({first.to_json()['reason']} {first.field})",
        field=first.field,
    )
