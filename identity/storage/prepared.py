"""Server-side prepared statements for the PostgreSQL hot paths (``pg_identify``, and the
event batch's statements in ``identity.events.services``).

Measured (docs/DECISIONS.md, "Prepared statements"): planning, not executing, is most
of what the hot path's statements cost PostgreSQL. ``_PEEK`` alone ran at 2,400 tps
sent as text and 15,500 tps prepared, on the same 10,000-contact database and the same
two cores; the plans PostgreSQL keeps for them are the same index scans it plans per
call (checked with ``EXPLAIN EXECUTE``).

Off with ``DB_PREPARED_STATEMENTS=off`` (behind a pooler in transaction mode, which would
run an ``EXECUTE`` on another server connection than its ``PREPARE``): the same SQL is
then sent as text, in the same messages.

psycopg2 has no protocol-level prepare, so this uses SQL ``PREPARE`` / ``EXECUTE``:
each connection prepares every registered statement once, in the same message as its
first use (so the first request on a connection sends no extra message and the round
trip counts stay what they are), and remembers it in the pool's per-connection ``info``
(cleared whenever SQLAlchemy replaces the connection). A prepared statement outlives a
rollback, and ``DEALLOCATE ALL`` first makes a half-finished attempt harmless. After a
schema change PostgreSQL re-plans prepared statements by itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from identity.storage.db import raw_execute

_PARAM = re.compile(r"%\((\w+)\)s")
_registry: list[Prepared] = []
_prepare_all: str | None = None
_prepared_count = 0
_INFO_KEY = "identity.storage.prepared"
#: The engine's execution option that turns preparing off (``db.create_db_engine``).
OPTION = "identity_prepared"


def enabled(conn: Connection) -> bool:
    return bool(conn.get_execution_options().get(OPTION, True))


class Prepared:
    """One statement written with ``%(name)s`` parameters, prepared as ``name``."""

    def __init__(self, name: str, sql: str, types: Mapping[str, str]) -> None:
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in order:
                order.append(key)
            return f"${order.index(key) + 1}"

        body = _PARAM.sub(number, sql).strip().rstrip(";")
        self.name = name
        #: the text to send when preparing is off
        self.sql = sql.strip().rstrip(";")
        self.prepare = f"PREPARE {name} ({', '.join(types[k] for k in order)}) AS {body}"
        #: the text to send (psycopg2 fills the parameters in as literals)
        self.execute = f"EXECUTE {name} ({', '.join(f'%({k})s' for k in order)})"
        _registry.append(self)

    def on(self, conn: Connection) -> str:
        """What to send for this statement on ``conn``: EXECUTE, or the SQL itself."""
        return self.execute if enabled(conn) else self.sql


def _all() -> str:
    global _prepare_all, _prepared_count
    if _prepare_all is None or _prepared_count != len(_registry):
        _prepare_all = "DEALLOCATE ALL;" + "".join(s.prepare + ";" for s in _registry)
        _prepared_count = len(_registry)
    return _prepare_all


def run(conn: Connection, message: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Send ``message`` (which may hold ``EXECUTE`` of registered statements) in one round
    trip, preparing every registered statement first on a connection that has not yet."""
    info = conn.connection.info
    # How many statements this connection prepared: a module imported after its first use
    # (the event batch's, in a process that served /identify first) registers more.
    if info.get(_INFO_KEY) == len(_registry) or not enabled(conn):
        return raw_execute(conn, message, params)
    rows = raw_execute(conn, _all() + message, params)
    info[_INFO_KEY] = len(_registry)
    return rows
