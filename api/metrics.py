"""Prometheus metrics at ``GET /metrics``.

Under gunicorn every worker process counts for itself; ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, and this endpoint then
adds the files of every process up (prometheus_client's multiprocess mode), so
one scrape sees the whole server. Without it (``flask run``, tests) the process's
own registry is served.

The domain does not know Prometheus: it emits signals through
:mod:`identity.observe` and :func:`on_signal` counts them. Gauges that describe
shared state (queue depth per partition, inbox backlog, dead letters, events
applied) are read at scrape time by :func:`pipeline_families`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from api.spec import operation
from identity import observe
from identity.errors import Unavailable
from identity.events import services as event_services
from identity.events.lease import list_leases
from identity.settings import Settings

bp = Blueprint("metrics", __name__)

REQUESTS = Counter(
    "identity_http_requests",
    "HTTP requests answered, by route pattern, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "identity_http_request_duration_seconds",
    "Time from request start to response, by route pattern, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
UNAVAILABLE = Counter(
    "identity_unavailable_responses",
    "503 answers, by route and cause (pool_timeout, unreachable, statement_timeout, "
    "contention, broker).",
    ["route", "reason"],
)
MERGES = Counter(
    "identity_merges",
    "Clusters folded into an older one (SPEC rule 3), counted when the merge commits.",
)
IGNORED = Counter(
    "identity_ignored_values",
    "Values a guard left out of a write (identify or an applied event), by field and reason"
    " (blocked, suppressed, generic, erased).",
    ["field", "reason"],
)
GENERIC_MARKS = Counter(
    "identity_generic_marks",
    "Values marked generic by a request crossing GENERIC_THRESHOLD (or by an operator).",
)
ERASURES = Counter("identity_erasures", "Erasures committed (POST /erasures, worker.erase).")
ERASED_ITEMS = Counter(
    "identity_erased_items",
    "What erasures removed, by kind (contacts, links, events).",
    ["kind"],
)
RETRIES = Counter(
    "identity_transaction_retries",
    "Transactions run again after transient contention, by reason "
    "(deadlock, serialization, lock_timeout, busy, conflict).",
    ["reason"],
)
REPLICA_FALLBACKS = Counter(
    "identity_replica_fallback_reads",
    "Reads the read replica would have served that ran on the primary, by reason "
    "(lag: further behind than REPLICA_MAX_LAG_MS; unreachable).",
    ["reason"],
)


class _CallableCollector(Collector):
    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self._produce = produce

    def collect(self) -> Iterable[Metric]:
        return self._produce()


def pipeline_families(engine: Engine, settings: Settings) -> list[Metric]:
    """The event pipeline's state, read at scrape time from PostgreSQL and Redis.

    Read here rather than counted in the workers: workers may run on other machines,
    and these numbers are facts of the shared database and broker, the same whichever
    API process is scraped. A source that cannot be read is reported as down, and the
    scrape still succeeds.
    """
    up = GaugeMetricFamily(
        "identity_metrics_source_up",
        "1 when this scrape could read the source (database, broker), else 0.",
        labels=["source"],
    )
    families: list[Metric] = []
    try:
        with engine.connect() as conn:
            applied = event_services.count_processed_events(conn)
            pending = event_services.inbox_pending(conn)
            dead = event_services.count_dead_letters(conn)
            owned = (
                {lease.partition for lease in list_leases(conn) if lease.live}
                if settings.redis_url and engine.dialect.name == "postgresql"
                else None
            )
    except Exception:  # unreachable or timed out: say so, keep the scrape
        up.add_metric(["database"], 0)
    else:
        up.add_metric(["database"], 1)
        families += [
            CounterMetricFamily(
                "identity_events_applied",
                "Distinct events applied (the idempotency ledger), by /events and the workers.",
                value=applied,
            ),
            GaugeMetricFamily(
                "identity_event_inbox_pending",
                "Events accepted (202) and not yet applied: the inbox backlog.",
                value=pending,
            ),
            GaugeMetricFamily(
                "identity_dead_letters",
                "Events parked in the dead-letter table (GET /dead-letters, replayable).",
                value=dead,
            ),
        ]
        if owned is not None:
            ownership = GaugeMetricFamily(
                "identity_partition_owned",
                "1 when a worker holds the partition's lease (consumes its queue), else 0.",
                labels=["partition"],
            )
            for partition in range(settings.identity_partitions):
                ownership.add_metric([str(partition)], 1.0 if partition in owned else 0.0)
            families.append(ownership)
    if settings.redis_url:
        from api.events import queue_depths

        try:
            depths = queue_depths(settings)
        except Unavailable:
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            depth = GaugeMetricFamily(
                "identity_queue_depth",
                "Messages waiting in each partition's Redis queue.",
                labels=["partition", "queue"],
            )
            for q in depths:
                depth.add_metric([str(q["partition"]), str(q["queue"])], float(q["depth"]))  # type: ignore[arg-type]
            families.append(depth)
    return [*families, up]


def on_signal(name: str, fields: Mapping[str, Any]) -> None:
    """Count the domain's signals (see :mod:`identity.observe`)."""
    if name == observe.MERGE:
        MERGES.inc(int(fields.get("demoted", 1)))
    elif name == observe.IGNORED:
        IGNORED.labels(field=str(fields["field"]), reason=str(fields["reason"])).inc()
    elif name == observe.GENERIC_MARKED:
        GENERIC_MARKS.inc()
    elif name == observe.ERASED:
        ERASURES.inc()
        for kind in ("contacts", "links", "events"):
            ERASED_ITEMS.labels(kind=kind).inc(int(fields.get(kind, 0)))
    elif name == observe.RETRY:
        RETRIES.labels(reason=str(fields.get("reason", "unknown"))).inc()
    elif name == observe.REPLICA_FALLBACK:
        REPLICA_FALLBACKS.labels(reason=str(fields.get("reason", "unknown"))).inc()


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_DefaultRegistryView())
    engine = current_app.extensions["identity.engine"]
    settings = current_app.extensions["identity.settings"]
    registry.register(_CallableCollector(lambda: pipeline_families(engine, settings)))
    return registry


class _DefaultRegistryView(Collector):
    """The process's default registry, inside a per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


@bp.get("/metrics")
@operation(
    id="metrics",
    examples={200: "# TYPE identity_merges_total counter\nidentity_merges_total 3.0\n"},
    summary="Prometheus metrics (never needs a key; aggregate counters only, no personal data)",
    ok=None,
    ok_description="Prometheus text exposition format.",
    media="text/plain",
    ok_schema={"type": "string"},
    unavailable=False,
)
def metrics() -> Response:
    return Response(generate_latest(_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(app: Flask) -> None:
    observe.subscribe(on_signal)
    app.register_blueprint(bp)

    # The labelled children, looked up once per (route, method, status): ``labels()``
    # validates and locks on every call (under cProfile this hook went from 85 to 52 us
    # a request).
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @app.after_request
    def _count(response: Response) -> Response:
        ctx, req = g._get_current_object(), request._get_current_object()  # one lookup each
        started = getattr(ctx, "started", None)
        rule = req.url_rule
        key = (rule.rule if rule is not None else "unmatched", req.method, response.status_code)
        pair = children.get(key)
        if pair is None:
            route, method, status = key[0], key[1], str(key[2])
            pair = children[key] = (
                REQUESTS.labels(route=route, method=method, status=status),
                LATENCY.labels(route=route, method=method, status=status),
            )
        pair[0].inc()
        if started is not None:
            pair[1].observe(time.perf_counter() - started)
        if response.status_code == 503:
            route = key[0]
            reason = getattr(ctx, "unavailable_reason", None) or "unknown"
            UNAVAILABLE.labels(route=route, reason=reason).inc()
        return response
