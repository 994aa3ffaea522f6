"""The API's bodies and answers as pydantic models: what the OpenAPI document is made of.

Requests are validated against them (``api.routes.read_body``); answers are built by the
domain's ``to_json`` and held to these shapes by tests (tests/api/test_openapi.py and
schemathesis check every real answer against the document made from them).
Field names are the wire names (camelCase), so no alias stands between the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool

from identity.events.messages import EventBody
from identity.validation import Body, EmailInput, PhoneInput, Refusal

MAX_ID = 2**31 - 1  # contact ids are 32-bit
ContactId = Annotated[int, Field(ge=1, le=MAX_ID)]


# -- requests ---------------------------------------------------------------------------


class IdentifyRequest(Body):
    """At least one of email and phoneNumber must be present and non-empty."""

    email: EmailInput = None
    phoneNumber: PhoneInput = None


class ErasureRequest(Body):
    """Exactly one of email, phoneNumber or personId."""

    email: EmailInput = None
    phoneNumber: PhoneInput = None
    personId: Annotated[
        ContactId | None, Refusal("personId must be a contact id (a positive integer)")
    ] = None
    suppress: Annotated[StrictBool, Refusal("suppress must be true or false")] = Field(
        False,
        description="Keep a keyed hash so the value is ignored from now on (needs "
        "SUPPRESSION_HASH_KEY).",
    )
    dryRun: Annotated[StrictBool, Refusal("dryRun must be true or false")] = Field(
        False, description="Answer the same, write nothing: what a confirmation shows."
    )
    expectedPrimaryContactId: Annotated[
        ContactId | None,
        Refusal("expectedPrimaryContactId must be a contact id (a positive integer)"),
        Field(description="With personId: 409 when the person's primary is no longer this one."),
    ] = None


class GuardMark(Body):
    """Exactly one of email or phoneNumber."""

    email: EmailInput = None
    phoneNumber: PhoneInput = None


class EventsRequest(RootModel[EventBody | list[EventBody]]):
    """One identity event, or an array of up to EVENTS_MAX_BATCH of them."""


# -- answers ----------------------------------------------------------------------------


class Answer(BaseModel):
    """An answer: documented as exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Error(BaseModel):
    error: str = Field(description="What was wrong, for a person to read.")
    field: str | None = Field(None, description="The request field at fault, when there is one.")


class ItemError(Answer):
    index: int = Field(ge=0)
    error: str
    field: str | None = None


class EventErrors(Error):
    errors: list[ItemError] = Field(
        default_factory=list, description="Every bad item of the batch, by index."
    )


class FeedGone(Error):
    oldestSeq: int


class ContactObject(Answer):
    primaryContactId: int = Field(ge=1)
    emails: list[str] = Field(
        description="The primary's own value first, then in row creation order."
    )
    phoneNumbers: list[str]
    secondaryContactIds: list[Annotated[int, Field(ge=1)]] = Field(description="Ascending.")


class Ignored(Answer):
    field: Literal["email", "phoneNumber"]
    reason: Literal["blocked", "generic"] = Field(
        description="A suppressed value is reported as blocked."
    )


class IdentifyResponse(Answer):
    contact: ContactObject
    ignored: list[Ignored] = Field(
        default_factory=list,
        description="Present when a guard ignored one of the request's values: the request "
        "was applied without it.",
    )


class LookupResponse(Answer):
    persons: list[ContactObject] = Field(
        description="Every person holding the email or the phone (0, 1 or 2), ascending by "
        "primaryContactId."
    )


class Health(Answer):
    status: Literal["ok"]
    database: str


class EventsAccepted(Answer):
    accepted: int = Field(ge=1)
    status: Literal["queued", "applied"] = Field(
        description="queued: committed to the inbox, applied by the workers (REDIS_URL set); "
        "applied: applied in-process before answering (embedded default)."
    )
    eventIds: list[str]


class QueueDepth(Answer):
    partition: int
    queue: str
    depth: int = Field(ge=0)
    owner: str | None = Field(
        None, description="The worker holding the partition's lease (null: no owner now)."
    )
    leaseToken: int | None = Field(None, description="The fencing token of that lease.")
    leaseExpiresAt: str | None = Field(None, description="When the lease runs out unless renewed.")


class Queues(Answer):
    mode: Literal["queued", "in-process"]
    partitions: int = Field(ge=1)
    queues: list[QueueDepth]
    inboxPending: int = Field(ge=0)
    deadLetters: int = Field(ge=0)


class DeadLetter(Answer):
    eventId: str
    payload: Any
    error: str
    attempts: int = Field(ge=1)
    failedAt: str


class DeadLetters(Answer):
    total: int = Field(ge=0)
    deadLetters: list[DeadLetter]


class IndexLinks(Answer):
    openapi: str = Field(description="This OpenAPI document.")
    health: str = Field(description="GET /healthz.")
    metrics: str = Field(description="Prometheus metrics.")
    explorer: str = Field(description="The explorer page, for people.")


class IndexEntry(Answer):
    method: str
    path: str
    summary: str


class Index(Answer):
    service: str
    version: str
    description: str
    links: IndexLinks
    endpoints: list[IndexEntry]


class GraphContact(Answer):
    id: int
    email: str | None
    phoneNumber: str | None
    linkPrecedence: Literal["primary", "secondary"]
    linkedId: int | None
    createdAt: datetime


class Link(Answer):
    """An assertion that this email and this phone are one person, held by no one contact."""

    email: str
    phoneNumber: str
    createdAt: datetime
    cause: str | None = Field(
        description='The request id or eventId that recorded it, or "backfill".'
    )


class Edge(Answer):
    """Contacts a and b are one person because they share an email or a phone (value), or
    because of a link."""

    a: int
    b: int
    via: Literal["email", "phoneNumber", "link"]
    value: str | None = None
    link: Link | None = None


class PersonGraph(Answer):
    primaryContactId: int
    contacts: list[GraphContact] = Field(
        description="In creation order; at most `limit`, the nearest to the primary by edges."
    )
    links: list[Link]
    edges: list[Edge] = Field(
        description="A spanning tree: enough edges to join every contact shown."
    )
    truncated: bool = Field(
        description="True when the person has more contacts than `limit` (GRAPH_LIMIT)."
    )
    totalContacts: int
    limit: int


class WhyPath(Answer):
    primaryContactId: int
    contactIds: list[int] = Field(description="The chain from a to b.")
    edges: list[Edge] = Field(description="A shortest chain of edges from a to b, in order.")


ChangeKind = Literal[
    "person.created", "contact.added", "person.merged", "person.split",
    "contacts.erased", "guard.marked", "guard.cleared",
]  # fmt: skip


class Change(Answer):
    seq: int | None = Field(
        description="The feed's order; null in a person's history for a change committed but "
        "not numbered yet."
    )
    kind: ChangeKind
    at: datetime
    cause: str | None = Field(description="The request's X-Request-ID, or the eventId.")
    payload: dict[str, Any] = Field(
        description="Contact ids only (never an email or a phone); see README, 'The change feed'."
    )


class History(Answer):
    primaryContactId: int
    changes: list[Change] = Field(
        description="Oldest first, the absorbed persons' changes included."
    )
    truncated: bool


class ChangePage(Answer):
    changes: list[Change]
    next: int = Field(
        description="Pass as `after` to read on: the last seq of this page (or `after` when the "
        "page is empty)."
    )


class WhoAmI(Answer):
    role: Literal["open", "read", "admin"]


class Erased(Answer):
    contacts: int
    links: int
    events: int = Field(description="Queued events and dead letters that held the value.")


class ErasureResponse(Answer):
    erased: Erased
    persons: list[ContactObject] = Field(
        description="The persons that remain of the clusters that held it."
    )
    dryRun: bool


class BlockedPatterns(Answer):
    """Full-match patterns on normalized values."""

    email: list[str]
    phoneNumber: list[str]


class GenericValue(Answer):
    id: int
    field: Literal["email", "phoneNumber"]
    value: str
    partners: int = Field(description="Distinct partner values counted when it was marked.")
    markedAt: datetime


class Guards(Answer):
    blocked: BlockedPatterns
    generic: list[GenericValue]
    suppressed: int = Field(description="How many suppressed hashes are kept (never the values).")
    genericThreshold: int
    note: str


class GuardMarked(Answer):
    guard: GenericValue
