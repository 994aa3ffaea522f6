"""Prometheus metrics at ``GET /metrics``.

Under gunicorn every worker process counts for itself; ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker starts, and this endpoint then
adds the files of every process up (prometheus_client's multiprocess mode), so
one scrape sees the whole server. Without it (``flask run``, tests) the process's
own registry is served.

The domain does not know Prometheus: it emits signals through
:mod:`identity.observe` and :func:`on_signal` counts them. Gauges that describe
shared state (queue depth per partition, dead letters) are read at scrape time
by collectors the async path registers with :func:`add_collector`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from api.observability import route_label
from identity import observe

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
RETRIES = Counter(
    "identity_transaction_retries",
    "Transactions run again after transient contention, by reason "
    "(deadlock, serialization, lock_timeout, busy, conflict).",
    ["reason"],
)

#: Scrape-time collectors (a callable returning metric families), e.g. queue depth.
_scrape_collectors: list[Callable[[], Iterable[Metric]]] = []


class _CallableCollector(Collector):
    def __init__(self, produce: Callable[[], Iterable[Metric]]) -> None:
        self._produce = produce

    def collect(self) -> Iterable[Metric]:
        return self._produce()


def add_collector(produce: Callable[[], Iterable[Metric]]) -> None:
    """Register a scrape-time producer of metric families (once per callable)."""
    if produce not in _scrape_collectors:
        _scrape_collectors.append(produce)


def on_signal(name: str, fields: Mapping[str, Any]) -> None:
    """Count the domain's signals (see :mod:`identity.observe`)."""
    if name == observe.MERGE:
        MERGES.inc(int(fields.get("demoted", 1)))
    elif name == observe.RETRY:
        RETRIES.labels(reason=str(fields.get("reason", "unknown"))).inc()


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_DefaultRegistryView())
    for produce in _scrape_collectors:
        registry.register(_CallableCollector(produce))
    return registry


class _DefaultRegistryView(Collector):
    """The process's default registry, inside a per-scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(_registry()), headers={"Content-Type": CONTENT_TYPE_LATEST})


def register(app: Flask) -> None:
    observe.subscribe(on_signal)
    app.register_blueprint(bp)

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.get("started")
        route = route_label()
        status = str(response.status_code)
        REQUESTS.labels(route=route, method=request.method, status=status).inc()
        if started is not None:
            LATENCY.labels(route=route, method=request.method, status=status).observe(
                time.perf_counter() - started
            )
        if response.status_code == 503:
            reason = g.get("unavailable_reason") or "unknown"
            UNAVAILABLE.labels(route=route, reason=reason).inc()
        return response
