"""``identify`` on PostgreSQL in the fewest round trips (see docs/benchmarks/RESULTS.md).

Same rules, same locks and same answer as the portable path in ``services``; what
changes is how many messages go to the server and how much of the cluster comes back:

0. a repeat lookup (rule 4: the request's identifiers already sit in one cluster) is
   answered by one read without any lock (``_PEEK``, see why there), so it neither
   waits for writers nor makes its COMMIT flush the WAL;
1. otherwise the advisory locks, the guards of the values and the root lookup ``FOR
   UPDATE`` travel in one message (two statements: the root lookup must take its
   snapshot *after* the identifier locks are granted, so it cannot be one statement);
2. one statement answers "does the cluster already hold the email / the phone" and
   aggregates the answer (distinct emails and phones in SPEC order, secondary ids) in
   SQL, so a 10,000-member cluster costs one row, not 10,000;
3. a write, when there is one, is one message: the merge ``UPDATE``, the ``INSERT`` and
   the fresh answer.

Messages per request, whatever the size of the table or the cluster: rule 4 one (the
lock-free read); rule 1 four (the read; BEGIN with the identifier locks, the guards and
the root locks; the insert; COMMIT); rules 2 and 3 five (the same plus the answer). The
route runs the transaction with ``begin_in_first_message``, so BEGIN costs no message of
its own. The statements are prepared on the server once per connection
(``identity.storage.prepared``: planning them was most of their cost) and sent on the raw
DBAPI cursor (``db.raw_execute``): nothing to compile, plan or wrap per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from identity import observe
from identity.errors import TransientConflict
from identity.feed.changes import CONTACT_ADDED, PERSON_CREATED
from identity.graph.reconcile import ClusterView, Insert, Row, decide_held
from identity.guards.hashing import EMAIL, PHONE, resolve_key, value_hash
from identity.guards.policy import (
    AllIgnored,
    GuardPolicy,
    Marks,
    Screened,
    record_ignored,
    screen,
    values_of,
)
from identity.guards.store import mark_generic
from identity.normalize import Identifiers
from identity.storage import prepared
from identity.storage.db import utcnow
from identity.storage.locking import advisory_key, identifier_keys

# ``= ANY(ARRAY(...))`` rather than ``IN (...)``: the planner cannot know that 5,000 rows
# holding one email have one root, and with IN it chose a hash join over the whole
# table (210 ms at 1M contacts); the array is an init plan and the lookup stays on the
# primary key (1.6 ms).
_ROOTS = """
SELECT id, email, phone_number, linked_id, created_at FROM contact
WHERE deleted_at IS NULL AND id = ANY(ARRAY(
    SELECT DISTINCT coalesce(linked_id, id) FROM contact
    WHERE deleted_at IS NULL AND (email = %(e)s OR phone_number = %(p)s)))
ORDER BY id FOR UPDATE"""

# The answer, aggregated over the members ``m`` numbered in answer order (rn = 1 is the
# primary, then by (created_at, id): SPEC's "the primary's own value first, the rest in
# the order their rows were created"; reconcile.build_view sorts the same way), plus
# whether the cluster already holds the request's email and phone.
_AGGREGATES = """
SELECT
    coalesce((SELECT bool_or(email = %(e)s) FROM m), false),
    coalesce((SELECT bool_or(phone_number = %(p)s) FROM m), false),
    (SELECT array_agg(email ORDER BY rn) FROM (
        SELECT email, min(rn) AS rn FROM m WHERE email IS NOT NULL GROUP BY email) x),
    (SELECT array_agg(phone_number ORDER BY rn) FROM (
        SELECT phone_number, min(rn) AS rn FROM m WHERE phone_number IS NOT NULL
        GROUP BY phone_number) y),
    (SELECT array_agg(id ORDER BY id) FROM m WHERE rn > 1)"""

# Whether one live contact or one link holds exactly the request's pair (SPEC "The
# graph's edges": only then may a request that changes no contact write nothing).
_PAIR_HELD = """
    (EXISTS (SELECT 1 FROM contact WHERE deleted_at IS NULL
             AND email = %(e)s AND phone_number = %(p)s)
     OR EXISTS (SELECT 1 FROM link WHERE email = %(e)s AND phone_number = %(p)s))"""

# The members of the locked clusters under the winner ``w``.
_ANSWER = (
    """
WITH m AS MATERIALIZED (
    SELECT id, email, phone_number,
           row_number() OVER (ORDER BY id <> %(w)s, created_at, id) AS rn
    FROM contact
    WHERE deleted_at IS NULL AND (id = ANY(%(roots)s) OR linked_id = ANY(%(roots)s)))"""
    + _AGGREGATES
    + ","
    + _PAIR_HELD
    # The roots of the request's values, read again now that the root locks are held: a
    # concurrent erasure may have split a cluster and promoted a row nobody locked
    # (docs/ARCHITECTURE.md, "Erasure and the locks").
    + """,
    ARRAY(SELECT DISTINCT coalesce(linked_id, id) FROM contact
          WHERE deleted_at IS NULL AND (email = %(e)s OR phone_number = %(p)s))"""
)

# Rule 4 without locks: one statement, one snapshot. When the request's identifiers all
# sit in one cluster of that snapshot *and* one live contact or one link holds the pair
# itself, nothing is to be written and that cluster is the answer: the request's
# assertion is already on record, so it is ordered at its snapshot and its pair stays
# joined until one of its values is erased (docs/ARCHITECTURE.md, "The lock-free repeat
# lookup"). No lock, no row lock, so no transaction id and no WAL flush at commit.
# Anything else falls through to the locked path.
_PEEK = (
    """
WITH r AS MATERIALIZED (
    SELECT DISTINCT coalesce(linked_id, id) AS root FROM contact
    WHERE deleted_at IS NULL AND (email = %(e)s OR phone_number = %(p)s)),
m AS MATERIALIZED (
    SELECT id, email, phone_number,
           row_number() OVER (ORDER BY linked_id IS NOT NULL, created_at, id) AS rn
    FROM contact
    WHERE deleted_at IS NULL AND (SELECT count(*) FROM r) = 1
      AND (id = ANY(ARRAY(SELECT root FROM r)) OR linked_id = ANY(ARRAY(SELECT root FROM r))))"""
    + _AGGREGATES
    + ", (SELECT min(root) FROM r), (SELECT count(*) FROM r),"
    + _PAIR_HELD
    + ","
    + """
    (EXISTS (SELECT 1 FROM generic_value WHERE cleared_at IS NULL
             AND ((field = 'email' AND value = %(e)s) OR (field = 'phoneNumber' AND value = %(p)s)))
     OR EXISTS (SELECT 1 FROM erased_value WHERE suppressed
                AND value_hash IN (%(he)s, %(hp)s)))"""
)

# The guards of the request's values, read under their identifier locks (sent in the same
# message as the locks): generic marks, suppressed hashes, and each value's direct
# partners of the other kind, at most threshold + 1 (identity.guards.store reads the same).
_GUARDS_WITH = """
WITH g AS (
    SELECT field, cleared_at, baseline FROM generic_value
    WHERE (field = 'email' AND value = %(e)s) OR (field = 'phoneNumber' AND value = %(p)s)),
b AS (
    SELECT coalesce((SELECT baseline FROM g WHERE field = 'email' AND cleared_at IS NOT NULL),
                    0) AS e,
           coalesce((SELECT baseline FROM g WHERE field = 'phoneNumber'
                     AND cleared_at IS NOT NULL), 0) AS p)"""
_GUARDS_COLUMNS = """
SELECT
    EXISTS (SELECT 1 FROM g WHERE field = 'email' AND cleared_at IS NULL),
    EXISTS (SELECT 1 FROM g WHERE field = 'phoneNumber' AND cleared_at IS NULL),
    EXISTS (SELECT 1 FROM erased_value WHERE suppressed AND value_hash = %(he)s),
    EXISTS (SELECT 1 FROM erased_value WHERE suppressed AND value_hash = %(hp)s),
    CASE WHEN %(count)s THEN ARRAY(SELECT y FROM (
        SELECT phone_number AS y FROM contact WHERE deleted_at IS NULL AND email = %(e)s
            AND phone_number IS NOT NULL
        UNION SELECT phone_number FROM link WHERE email = %(e)s) z
        LIMIT %(n)s + (SELECT e FROM b)) END,
    CASE WHEN %(count)s THEN ARRAY(SELECT y FROM (
        SELECT email AS y FROM contact WHERE deleted_at IS NULL AND phone_number = %(p)s
            AND email IS NOT NULL
        UNION SELECT email FROM link WHERE phone_number = %(p)s) z
        LIMIT %(n)s + (SELECT p FROM b)) END,
    (SELECT e FROM b), (SELECT p FROM b)"""

# The guards and, in the same statement, the roots of the request's values locked as
# ``_ROOTS`` locks them (one array per column, in id order). The statement runs after the
# identifier locks are granted (its own snapshot), so a write sends the locks, the guards
# and the root locks in one message; when a guard then leaves a value out, those root
# locks are given back (ROLLBACK TO SAVEPOINT) and taken again for the values that remain.
_GUARDS_ROOTS = (
    _GUARDS_WITH
    + ",\nr AS ("
    + _ROOTS
    + ")"
    + _GUARDS_COLUMNS
    + """,
    ARRAY(SELECT id FROM r ORDER BY id), ARRAY(SELECT email FROM r ORDER BY id),
    ARRAY(SELECT phone_number FROM r ORDER BY id),
    ARRAY(SELECT linked_id FROM r ORDER BY id), ARRAY(SELECT created_at FROM r ORDER BY id)"""
)

# A new contact and its change (person.created or contact.added) in one statement.
_INSERT = """
WITH c AS (
    INSERT INTO contact (email, phone_number, linked_id, link_precedence, created_at, updated_at)
    VALUES (%(e)s, %(p)s, %(link)s, %(precedence)s, %(created)s, %(created)s) RETURNING id),
ch AS (
    INSERT INTO change (kind, payload, at, cause)
    SELECT %(kind)s, json_build_object('primaryContactId', coalesce(%(link)s, c.id),
                                       'contactId', c.id), %(created)s, %(cause)s
    FROM c RETURNING id),
s AS (
    INSERT INTO change_subject (change_id, contact_id)
    SELECT DISTINCT ch.id, x FROM ch, c, LATERAL (VALUES (c.id), (coalesce(%(link)s, c.id))) v(x))
SELECT id FROM c"""

# Rule 3's merge, its link and its change (person.merged), in one statement.
_MERGE = """
WITH d AS (
    UPDATE contact SET linked_id = %(w)s, link_precedence = 'secondary', updated_at = %(now)s
    WHERE deleted_at IS NULL AND (id = ANY(%(losers)s) OR linked_id = ANY(%(losers)s))
    RETURNING id),
l AS (
    INSERT INTO link (email, phone_number, created_at, cause)
    VALUES (%(e)s, %(p)s, %(now)s, %(cause)s) ON CONFLICT DO NOTHING),
ch AS (
    INSERT INTO change (kind, payload, at, cause)
    SELECT 'person.merged', json_build_object(
        'primaryContactId', %(w)s, 'absorbedPrimaryIds', %(losers)s,
        'movedContactIds', (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM d)),
        %(now)s, %(cause)s
    RETURNING id),
s AS (
    INSERT INTO change_subject (change_id, contact_id)
    SELECT ch.id, x FROM ch, unnest(array_prepend(%(w)s, %(losers)s)) AS x)
SELECT count(*) FROM d;"""

# Rule 4 whose pair is not on record yet.
_LINK = """
INSERT INTO link (email, phone_number, created_at, cause)
VALUES (%(e)s, %(p)s, %(now)s, %(cause)s) ON CONFLICT DO NOTHING"""

# Every statement above, prepared once per connection (``identity.storage.prepared``).
_T, _I, _IA, _TS = "text", "integer", "integer[]", "timestamptz"
_PEEK_X = prepared.Prepared("identity_peek", _PEEK, {"e": _T, "p": _T, "he": _T, "hp": _T})
_ROOTS_X = prepared.Prepared("identity_roots", _ROOTS, {"e": _T, "p": _T})
_ANSWER_X = prepared.Prepared("identity_answer", _ANSWER, {"e": _T, "p": _T, "w": _I, "roots": _IA})
_GUARDS_ROOTS_X = prepared.Prepared(
    "identity_guards_roots",
    _GUARDS_ROOTS,
    {"e": _T, "p": _T, "he": _T, "hp": _T, "count": "boolean", "n": _I},
)
_INSERT_X = prepared.Prepared(
    "identity_insert",
    _INSERT,
    {"e": _T, "p": _T, "link": _I, "precedence": _T, "created": _TS, "kind": _T, "cause": _T},
)
_MERGE_X = prepared.Prepared(
    "identity_merge",
    _MERGE,
    {"w": _I, "losers": _IA, "now": _TS, "e": _T, "p": _T, "cause": _T},
)
_LINK_X = prepared.Prepared("identity_link", _LINK, {"e": _T, "p": _T, "now": _TS, "cause": _T})

# How often the roots may move under us (concurrent merges) before the whole
# transaction is retried; the same bound as services.MAX_ROOT_CHASES.
MAX_ROOT_CHASES = 16


def _lock_sql(count: int) -> str:
    calls = ", ".join(f"pg_advisory_xact_lock(%(k{i})s)" for i in range(count))
    return f"SELECT {calls};"


_LOCK_SQL = {n: _lock_sql(n) for n in (1, 2)}


def _roots(rows: Iterable[Sequence[Any]]) -> list[Row] | None:
    """The locked roots (id, email, phone, linked_id, created_at); None when a locked row
    is no longer a root (a merge demoted it while we waited)."""
    rows = list(rows)
    if not all(r[3] is None for r in rows):
        return None
    return [Row(id=r[0], email=r[1], phone=r[2], linked_id=None, created_at=r[4]) for r in rows]


def _lock_roots(conn: Connection, sql: str, params: dict[str, Any]) -> list[Row] | None:
    """Run the root lookup ``FOR UPDATE``: :func:`_roots` of what it locked."""
    return _roots(prepared.run(conn, sql, params))


def _view(primary_id: int, row: Sequence[Any]) -> ClusterView:
    return ClusterView(
        primary_id=primary_id,
        emails=tuple(row[2] or ()),
        phone_numbers=tuple(row[3] or ()),
        secondary_ids=tuple(row[4] or ()),
    )


def _hashes(conn: Connection, identifiers: Identifiers, policy: GuardPolicy) -> dict[str, Any]:
    key = resolve_key(conn, policy.configured_key)
    e, p = identifiers.email, identifiers.phone
    return {
        "he": value_hash(key, EMAIL, e) if e is not None else None,
        "hp": value_hash(key, PHONE, p) if p is not None else None,
    }


def peek(
    conn: Connection, identifiers: Identifiers, policy: GuardPolicy | None = None
) -> ClusterView | None:
    """The answer when the request changes nothing (rule 4), read without locks; else None.

    A request with a blocked, generic or suppressed value always takes the locked path
    (its guards are read under the identifier locks there).
    """
    policy = policy or GuardPolicy()
    if any(policy.is_blocked(v) for v in values_of(identifiers)):
        return None
    e, p = identifiers.email, identifiers.phone
    params = {"e": e, "p": p} | _hashes(conn, identifiers, policy)
    row = prepared.run(conn, _PEEK_X.on(conn), params)[0]
    held_email, held_phone, root, clusters, pair_held = row[0], row[1], row[5], row[6], row[7]
    if (
        clusters == 1
        and (e is None or held_email)
        and (p is None or held_phone)
        and (e is None or p is None or pair_held)
        and not row[8]
    ):
        return _view(root, row)
    return None


def _screen(
    conn: Connection,
    identifiers: Identifiers,
    policy: GuardPolicy,
    params: dict[str, Any],
    lock_sql: str,
) -> tuple[Screened, list[Row] | None]:
    """Take the identifier locks, read the guards under them and lock the roots of the
    values (after ``SAVEPOINT roots``): one message. Returns what the guards leave and
    the locked roots (None when a locked row is no longer a root, as ``_lock_roots``)."""
    e, p = identifiers.email, identifiers.phone
    count = e is not None and p is not None and policy.generic_threshold > 0
    params.update(_hashes(conn, identifiers, policy), count=count, n=policy.generic_threshold + 1)
    row = prepared.run(conn, lock_sql + "SAVEPOINT roots;" + _GUARDS_ROOTS_X.on(conn), params)[0]
    marks = Marks()
    if row[0]:
        marks.generic.add(("e", e))  # type: ignore[arg-type]
    if row[1]:
        marks.generic.add(("p", p))  # type: ignore[arg-type]
    if row[2]:
        marks.suppressed.add(("e", e))  # type: ignore[arg-type]
    if row[3]:
        marks.suppressed.add(("p", p))  # type: ignore[arg-type]
    if count:
        marks.partners[("e", e)] = set(row[4])  # type: ignore[index]
        marks.partners[("p", p)] = set(row[5])  # type: ignore[index]
    if row[6]:
        marks.baseline[("e", e)] = row[6]  # type: ignore[index]
    if row[7]:
        marks.baseline[("p", p)] = row[7]  # type: ignore[index]
    return screen(identifiers, policy, marks), _roots(zip(*row[8:13], strict=True))


def identify(
    conn: Connection,
    *,
    identifiers: Identifiers,
    peeked: bool = False,
    cause: str | None = None,
    policy: GuardPolicy | None = None,
) -> ClusterView | AllIgnored:
    """SPEC rules 1-4 for one email/phone pair, on PostgreSQL.

    ``peeked``: the caller already ran :func:`peek` (outside this transaction) and it
    found the request may write; the locked path starts at once.

    The identifier locks, the guards of the request's values and the root lookup ``FOR
    UPDATE`` travel in one message (the root lookup in a statement after the locks: its
    snapshot is taken once they are granted). The root locks are taken inside a
    savepoint: when a root turns out stale (demoted by a merge, or no longer the root of
    our values after a split), rolling back to it gives those row locks back before we
    look again, so a chase never holds a lock that the writer we are chasing waits for.
    The identifier locks, taken before the savepoint, stay held. When a guard leaves a
    value out, the roots locked for it are given back the same way and looked up again
    for the values that remain.
    """
    policy = policy or GuardPolicy()
    if not peeked:
        view = peek(conn, identifiers, policy)
        if view is not None:
            return view
    keys = sorted({advisory_key(k) for k in identifier_keys(identifiers)})
    params: dict[str, Any] = {"cause": cause}
    params.update({f"k{i}": key for i, key in enumerate(keys)})
    params.update(e=identifiers.email, p=identifiers.phone)
    screened, roots = _screen(conn, identifiers, policy, params, _LOCK_SQL[len(keys)])
    sql = "ROLLBACK TO SAVEPOINT roots;" + _ROOTS_X.on(conn)
    fresh = screened.identifiers != identifiers
    if fresh:
        # A guard left a value out: the roots locked for it are not ours to hold. Give them
        # back and close the savepoint before anything is written (a chase below must not
        # roll the generic mark back), then look the roots up again for what remains.
        prepared.run(conn, "ROLLBACK TO SAVEPOINT roots; RELEASE SAVEPOINT roots", {})
        roots, sql = None, "SAVEPOINT roots;" + _ROOTS_X.on(conn)
    record_ignored(conn, screened)
    if screened.newly_generic:
        mark_generic(conn, screened.newly_generic, cause)
    if screened.identifiers is None:
        return AllIgnored(screened)
    identifiers = screened.identifiers
    e, p = identifiers.email, identifiers.phone
    params.update(e=e, p=p)
    for chase in range(MAX_ROOT_CHASES):
        if chase > 0 or fresh:
            roots = _lock_roots(conn, sql, params)
            sql = "ROLLBACK TO SAVEPOINT roots;" + _ROOTS_X.on(conn)
        if roots is None:
            continue
        if not roots:  # rule 1 (the identifier locks keep anyone else from adding e or p)
            now = utcnow()
            new_id = prepared.run(
                conn,
                _INSERT_X.on(conn),
                params
                | {"link": None, "precedence": "primary", "created": now, "kind": PERSON_CREATED},
            )[0][0]
            return ClusterView(
                primary_id=new_id,
                emails=(e,) if e is not None else (),
                phone_numbers=(p,) if p is not None else (),
                secondary_ids=(),
                ignored=screened.ignored,
            )
        winner = min(roots, key=lambda r: r.age)
        params.update(w=winner.id, roots=[r.id for r in roots])
        summary = prepared.run(conn, _ANSWER_X.on(conn), params)[0]
        if set(summary[6]) != {r.id for r in roots}:
            continue  # a split moved our values under another root: look again
        view = _write(conn, identifiers, roots, winner, summary, params)
        return replace(view, ignored=screened.ignored) if screened.ignored else view
    raise TransientConflict("cluster roots kept moving under concurrent merges and splits")


def _write(
    conn: Connection,
    identifiers: Identifiers,
    roots: list[Row],
    winner: Row,
    summary: Sequence[Any],
    params: dict[str, Any],
) -> ClusterView:
    decision = decide_held(
        identifiers, roots, held_email=summary[0], held_phone=summary[1], held_pair=summary[5]
    )
    if not decision.writes:  # rule 4, pair on record
        return _view(winner.id, summary)
    now = utcnow()
    params.update(now=now)
    if decision.demote:  # rule 3: the newer clusters point at the winner, one level deep
        params.update(losers=list(decision.demote))
        prepared.run(conn, _MERGE_X.on(conn), params)
        observe.record(conn, observe.MERGE, demoted=len(decision.demote))
        # The merged cluster is the union just aggregated, under the winner.
        return _view(winner.id, summary)
    if decision.insert is Insert.NOTHING:  # rule 4, recording the pair
        prepared.run(conn, _LINK_X.on(conn), params)
        return _view(winner.id, summary)
    # Rule 2: a secondary never older than its primary, whatever the clocks (I2).
    created: datetime = max(now, winner.created_at)
    params.update(link=winner.id, precedence="secondary", created=created, kind=CONTACT_ADDED)
    summary = prepared.run(conn, _INSERT_X.on(conn) + ";" + _ANSWER_X.on(conn), params)[0]
    return _view(winner.id, summary)


def cluster_view(conn: Connection, root_id: int) -> ClusterView:
    """The answer for the cluster under ``root_id``, aggregated in SQL (one row)."""
    params = {"e": None, "p": None, "w": root_id, "roots": [root_id]}
    return _view(root_id, prepared.run(conn, _ANSWER_X.on(conn), params)[0])
