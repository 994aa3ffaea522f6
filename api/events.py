"""POST /events (publish identity events), GET /queues and GET /dead-letters.

With REDIS_URL set, accepted events are committed to the inbox and the 202 means
"durably accepted": the relay (worker/relay.py) publishes them to the partition
queues after that commit. Without it (the embedded default), events are applied
in-process before the 202. See docs/ASYNC.md.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from kombu import Connection
from kombu.exceptions import ChannelError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from api import schemas
from api.routes import BadRequestBody, read_json_body
from api.spec import operation
from identity.errors import Unavailable
from identity.events import services as event_services
from identity.events.lease import list_leases
from identity.events.messages import InvalidEvents, parse_events, queue_name
from identity.settings import Settings
from identity.storage.db import run_in_transaction

bp = Blueprint("events", __name__)
DEAD_LETTER_PAGE = 100
# A monitoring read answers 503 quickly rather than waiting for Redis to come back.
_FAIL_FAST = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


def _settings() -> Settings:
    return current_app.extensions["identity.settings"]  # type: ignore[no-any-return]


def _engine() -> Any:
    return current_app.extensions["identity.engine"]


@bp.errorhandler(InvalidEvents)
def _invalid_events(error: InvalidEvents) -> ResponseReturnValue:
    return jsonify({"error": error.message, "errors": [e.to_json() for e in error.errors]}), 400


@bp.post("/events")
@operation(
    id="publishEvents",
    summary="Publish one identity event or an array of up to EVENTS_MAX_BATCH",
    body=schemas.EventsRequest,
    status=202,
    ok=schemas.EventsAccepted,
    ok_description="Durably accepted: committed to the inbox (queued) or applied (embedded"
    " default). An accepted event is never lost.",
    errors={
        400: (
            "The body is not an event or an array of events, the batch is empty or over"
            " EVENTS_MAX_BATCH, or an item is invalid; `errors` lists every bad item by index."
            " Nothing of the batch is accepted.",
            schemas.EventErrors,
        )
    },
    body_limit="EVENTS_MAX_BODY_BYTES",
    examples={
        400: {
            "error": "1 of 2 event(s) are invalid; none was accepted",
            "errors": [
                {
                    "index": 1,
                    "error": "email must look like an address: a local part, one @, a domain",
                    "field": "email",
                }
            ],
        },
        "request": [
            {
                "eventId": "order-1001",
                "email": "lorraine@hillvalley.edu",
                "phoneNumber": "123456",
                "occurredAt": "2024-05-01T12:00:00Z",
                "source": "checkout",
            }
        ],
        202: {"accepted": 1, "status": "queued", "eventIds": ["order-1001"]},
    },
)
def post_events() -> ResponseReturnValue:
    settings = _settings()
    request.max_content_length = settings.events_max_body_bytes  # batches outgrow /identify's
    body = read_json_body()
    if isinstance(body, dict):
        items: list[Any] = [body]
    elif isinstance(body, list):
        items = body
    else:
        raise BadRequestBody("request body must be an event object or an array of events")
    events = parse_events(items, settings.default_phone_region, limit=settings.events_max_batch)
    engine = _engine()
    if settings.redis_url:
        run_in_transaction(engine, lambda conn: event_services.accept_events(conn, events))
        status = "queued"
    else:  # embedded: no broker, the same service applies them here
        for chunk in event_services.chunked(events, event_services.MAX_EVENTS_PER_TRANSACTION):
            run_in_transaction(
                engine,
                lambda conn, c=chunk: event_services.apply_events(
                    conn, c, current_app.extensions["identity.guards"]
                ),
                attempts=settings.db_retry_attempts,
            )
        status = "applied"
    body = {"accepted": len(events), "status": status, "eventIds": [e.event_id for e in events]}
    return jsonify(body), 202


def queue_depths(settings: Settings) -> list[dict[str, object]]:
    queues: list[dict[str, object]] = []
    try:
        url = settings.redis_url.get()
        options = {**_FAIL_FAST, **settings.redis_transport_options}
        with Connection(url, connect_timeout=2, transport_options=options) as conn:
            channel = conn.default_channel
            for partition in range(settings.identity_partitions):
                name = queue_name(partition)
                try:
                    depth = channel.queue_declare(name, passive=True).message_count
                except ChannelError:  # Redis drops an empty list: no key, no messages
                    depth = 0
                queues.append({"partition": partition, "queue": name, "depth": depth})
    except (OSError, BrokerError, RedisError) as error:
        raise Unavailable("Redis is unreachable", reason="broker") from error
    return queues


@bp.get("/queues")
@operation(
    id="queues",
    examples={
        200: {
            "mode": "queued",
            "partitions": 2,
            "queues": [
                {"partition": 0, "queue": "identity.p0", "depth": 0},
                {"partition": 1, "queue": "identity.p1", "depth": 3},
            ],
            "inboxPending": 3,
            "deadLetters": 0,
        }
    },
    summary="Queue depth per partition, inbox backlog and dead-letter count",
    ok=schemas.Queues,
    ok_description="Depths read from Redis and PostgreSQL now.",
)
def queues() -> ResponseReturnValue:
    """Per-partition queue depth (Flower does not show it) and owner (the worker holding the
    partition's lease, ``null`` when none is live), inbox backlog, dead letters."""
    settings = _settings()
    engine = _engine()
    with engine.connect() as conn:
        pending = event_services.inbox_pending(conn)
        dead = event_services.count_dead_letters(conn)
        leases = (
            {lease.partition: lease for lease in list_leases(conn)}
            if engine.dialect.name == "postgresql"
            else {}
        )
    queues = queue_depths(settings) if settings.redis_url else []
    for queue in queues:
        held = leases.get(int(str(queue["partition"])))
        queue["owner"] = held.owner if held is not None and held.live else None
        if held is not None:
            queue["leaseToken"] = held.token
            queue["leaseExpiresAt"] = held.expires_at.isoformat()
    body: dict[str, object] = {
        "mode": "queued" if settings.redis_url else "in-process",
        "partitions": settings.identity_partitions,
        "queues": queues,
        "inboxPending": pending,
        "deadLetters": dead,
    }
    return jsonify(body)


@bp.get("/dead-letters")
@operation(
    id="deadLetters",
    examples={
        200: {
            "total": 1,
            "deadLetters": [
                {
                    "eventId": "order-7",
                    "payload": {"eventId": "order-7", "email": "x@y.z"},
                    "error": "invalid event: provide email or phoneNumber",
                    "attempts": 1,
                    "failedAt": "2024-05-01T12:00:00+00:00",
                }
            ],
        }
    },
    summary="The oldest dead letters with their errors (they hold personal data: keep API_KEYS"
    " set)",
    ok=schemas.DeadLetters,
    ok_description="Up to 100 dead letters, oldest first, and the total.",
)
def dead_letters() -> ResponseReturnValue:
    """The oldest dead letters with their errors; replay with `python -m worker.deadletters`."""
    with _engine().connect() as conn:
        total = event_services.count_dead_letters(conn)
        letters = event_services.list_dead_letters(conn, limit=DEAD_LETTER_PAGE)
    return jsonify({"total": total, "deadLetters": [d.to_json() for d in letters]})
