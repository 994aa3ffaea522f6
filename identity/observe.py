"""Domain signals for whoever watches (metrics, tests), without the domain knowing who.

The domain says *what happened* (a merge, a retried transaction) by name; an
entry point subscribes a callback and turns the signals into metrics. Nothing
here imports a metrics library, so ``identity`` stays plain Python.

Signals raised inside a transaction through :func:`record` are held back until
that transaction commits (``run_in_transaction`` flushes them), so a merge that
was rolled back and retried is counted once, when it really happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

#: A subscriber: ``(signal name, fields)``. It must be quick and must not raise.
Observer = Callable[[str, Mapping[str, Any]], None]

#: Signal names, stable: dashboards and alerts are built on them.
MERGE = "merge"  # fields: demoted (int, clusters folded into an older one)
IGNORED = "ignored"  # fields: field (email | phoneNumber), reason (blocked | suppressed
#   | generic | erased): a value a guard left out of a write
GENERIC_MARKED = "generic_marked"  # a value became generic
ERASED = "erased"  # fields: contacts, links, events (counts of one erasure)
RETRY = "retry"  # fields: reason (deadlock | serialization | lock_timeout | busy | conflict
#   | disconnect)
REPLICA_FALLBACK = "replica_fallback"  # fields: reason (lag | unreachable): a read that
#   the read replica would have served ran on the primary

_observers: list[Observer] = []
_pending: ContextVar[list[tuple[str, dict[str, Any]]] | None] = ContextVar(
    "identity_observe_pending", default=None
)


def subscribe(observer: Observer) -> None:
    """Call ``observer`` for every signal from now on (once, however often subscribed)."""
    if observer not in _observers:
        _observers.append(observer)


def unsubscribe(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


def emit(name: str, **fields: Any) -> None:
    """Tell every subscriber now. A failing subscriber is logged, never propagated."""
    for observer in list(_observers):
        try:
            observer(name, fields)
        except Exception:  # observability must never break the write path
            log.exception("observer %r failed on signal %s", observer, name)


def begin() -> Token[list[tuple[str, dict[str, Any]]] | None]:
    """Start holding back :func:`record`-ed signals of the transaction this context runs.

    Tracked per thread / task context (a ContextVar), never on the connection: a
    connection the database dropped must not be touched again before its rollback.
    """
    return _pending.set([])


def record(conn: Connection, name: str, **fields: Any) -> None:
    """A signal that only counts if the transaction on ``conn`` commits.

    Held until the owner of the transaction (which called :func:`begin`) commits and
    flushes; emitted at once when no owner is holding signals back.
    """
    pending = _pending.get()
    if pending is None:
        emit(name, **fields)
    else:
        pending.append((name, fields))


def take(token: Token[list[tuple[str, dict[str, Any]]] | None]) -> list[tuple[str, dict[str, Any]]]:
    """Stop holding back and return what was recorded since :func:`begin`."""
    result = _pending.get() or []
    _pending.reset(token)
    return result


def flush(signals: list[tuple[str, dict[str, Any]]]) -> None:
    """Emit signals that :func:`take` returned, after their transaction committed."""
    for name, fields in signals:
        emit(name, **fields)
