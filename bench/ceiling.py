"""The database's ceilings: pgbench running SQL for the same work as /identify, no Python.

Two ceilings, each a set of pgbench scripts (one per request kind of the mix, weighted
like the wrk mix), so the report can say what the project's SQL costs beyond the minimum
and what the server costs beyond its SQL:

- ``ours``: the statements of ``identity.graph.pg_identify`` (generated from them, so the
  ceiling follows the service when its SQL changes), sent as the service sends them:
  prepared (``-M prepared``; the service prepares them once per connection), the
  lock-free read in autocommit, which is all a repeat lookup (rule 4) needs; else BEGIN,
  the advisory locks with the guards of the values, the root lookup ``FOR UPDATE`` under
  a savepoint, the held-flags-and-answer query, the write (contact, link and change rows)
  when the rule writes, COMMIT. (The service sends the locks and the guards in one
  message; pgbench's prepared mode takes one statement a command, so here they are two.)
- ``minimal``: the cheapest correct SQL for the rules of SPEC v1 (issue 12): lookups =
  BEGIN, the advisory locks, the rows holding the email or the phone, the cluster by
  linked_id, COMMIT; new persons = BEGIN, the locks, the check, the insert, COMMIT; new
  secondaries and merges = the lookup plus the insert or the re-pointing ``UPDATE``. No
  links, no change feed, no guards: what v2 adds is part of what "ours" costs beyond it.
  Measured as text (``-M simple``, what issue 12's 4,700-5,600 tps were) and prepared.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench.mix import MIX
from identity.graph import pg_identify

#: pgbench opens one connection per client and the shared server allows 100 in all
#: (max_connections), some used by others: the ceiling at 256 clients is measured with 64.
#: (The service itself never holds more than WEB_CONCURRENCY x DB_POOL_SIZE connections.)
MAX_CLIENTS = 64

#: name -> (script set, pgbench -M mode)
CEILINGS = {
    "ours": ("ours", "prepared"),
    "minimal": ("minimal", "simple"),
    "minimal_prepared": ("minimal", "prepared"),
}

EMAIL = "('u' || (:{var})::text || '@seed.test')"
PHONE = "('9' || lpad((:{var})::text, 10, '0'))"
# (Every pgbench variable is a parameter of its own in prepared mode: each gets a type.)
NEW_EMAIL = (
    "('n' || (:nonce)::text || '.' || (:client_id)::text || '.' || (:r)::text || '@new.test')"
)
NEW_PHONE = (
    "('5' || (:nonce)::text || lpad((:client_id)::text, 3, '0') || lpad((:r)::text, 9, '0'))"
)
SECONDARY_PHONE = (
    "('6' || (:nonce)::text || lpad((:client_id)::text, 3, '0') || lpad((:r)::text, 9, '0'))"
)


def _lock(*keys: str) -> str:
    hashed = ", ".join(f"hashtextextended({k}, 0)" for k in keys)
    return (
        f"SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(ARRAY[{hashed}]) AS k ORDER BY k) s"
    )


def _one_line(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip().rstrip(";")


def _fill(sql: str, **values: str) -> str:
    return _one_line(sql % values)


def _hash(value: str) -> str:
    # The keyed hash of a value (a suppression check): any text of the same shape.
    return "NULL" if value == "NULL" else f"md5({value})"


def _guards_roots(e: str, p: str) -> str:
    """The guards and the root locks in one statement, as pg_identify sends them; its roots'
    ids and creation times give pgbench the winner and the loser (``\\gset``)."""
    both = _fill(
        pg_identify._GUARDS_ROOTS, e=e, p=p, he=_hash(e), hp=_hash(p), count="true", n="21"
    )
    columns = ", ".join(f"c{i}" for i in range(13))
    order = "ORDER BY c12[i], c8[i]"
    return (
        f"SELECT coalesce((SELECT c8[i] FROM generate_subscripts(c8, 1) i {order} LIMIT 1), 0)"
        f" AS w, coalesce((SELECT c8[i] FROM generate_subscripts(c8, 1) i {order}"
        " OFFSET 1 LIMIT 1), 0) AS l, coalesce(cardinality(c8), 0) AS n"
        f" FROM ({both}) x({columns}) \\gset"
    )


def _values(kind: str) -> tuple[str, str]:
    email, phone = EMAIL.format(var="pid"), PHONE.format(var="pid")
    return {
        "lookup_email": (email, "NULL"),
        "lookup_phone": ("NULL", phone),
        "lookup_both": (email, phone),
        "hot": (email, phone),
        "secondary": (email, SECONDARY_PHONE),
        "person": (NEW_EMAIL, NEW_PHONE),
        "merge": (email, PHONE.format(var="q")),
    }[kind]


def _header(kind: str) -> list[str]:
    lines = ["\\set pid random(:hot, :people - 1)", "\\set q random(:hot, :people - 1)"]
    if kind == "hot":
        lines[0] = "\\set pid random(0, :hot - 1)"
    lines.append("\\set r random(1, 999999999)")
    return lines


def _keys(e: str, p: str) -> list[str]:
    return [k for k, v in (("'e:' || " + e, e), ("'p:' || " + p, p)) if v != "NULL"]


def script(kind: str) -> str:
    """The pgbench script of one request kind, with the project's own statements."""
    lines = _header(kind)
    e, p = _values(kind)
    answer = _fill(pg_identify._ANSWER, e=e, p=p, w="(:w)::int", roots="ARRAY[:w, :l]::int[]")
    peek = _fill(pg_identify._PEEK, e=e, p=p, he=_hash(e), hp=_hash(p))
    lines.append(peek + ";")  # autocommit: no BEGIN
    if kind in ("lookup_email", "lookup_phone", "lookup_both", "hot"):
        return "\n".join(lines) + "\n"  # rule 4: the lock-free read is all
    lines += ["BEGIN;", _lock(*_keys(e, p)) + ";", "SAVEPOINT roots;", _guards_roots(e, p)]

    def insert(link: str, precedence: str, kind: str) -> str:
        return _fill(pg_identify._INSERT, e=e, p=p, link=link, precedence=precedence,
                     created="clock_timestamp()", kind=f"'{kind}'", cause="'bench'")  # fmt: skip

    if kind == "person":
        lines.append(insert("NULL::int", "'primary'", "person.created") + ";")
    else:
        lines.append(answer + ";")
    if kind == "secondary":
        lines += [insert("(:w)::int", "'secondary'", "contact.added") + ";", answer + ";"]
    if kind == "merge":
        merge = _fill(
            pg_identify._MERGE, w="(:w)::int", now="clock_timestamp()", losers="ARRAY[:l]::int[]",
            e=e, p=p, cause="'bench'",
        )  # fmt: skip
        lines += ["\\if :n = 2", merge + ";", "\\endif"]
    lines.append("END;")
    return "\n".join(lines) + "\n"


def minimal_script(kind: str) -> str:
    """The cheapest correct SQL for the same request (SPEC v1: no links, feed or guards)."""
    lines = _header(kind)
    e, p = _values(kind)
    live = "deleted_at IS NULL"
    holding = f"{live} AND (email = {e} OR phone_number = {p})"
    cluster = (
        "SELECT id, email, phone_number, linked_id, created_at FROM contact"
        f" WHERE {live} AND (id = ANY(ARRAY[:w, :l]::int[])"
        " OR linked_id = ANY(ARRAY[:w, :l]::int[]));"
    )
    roots = (
        "SELECT coalesce((array_agg(r ORDER BY r))[1], 0) AS w,"
        " coalesce((array_agg(r ORDER BY r))[2], 0) AS l, count(*) AS n FROM"
        f" (SELECT DISTINCT coalesce(linked_id, id) AS r FROM contact WHERE {holding}) x \\gset"
    )
    lines += ["BEGIN;", _lock(*_keys(e, p)) + ";"]
    if kind == "person":
        lines.append(f"SELECT count(*) FROM contact WHERE {holding};")
        lines.append(
            "INSERT INTO contact (email, phone_number, link_precedence, created_at, updated_at)"
            f" VALUES ({e}, {p}, 'primary', now(), now());"
        )
    else:
        lines += [roots, cluster]
    if kind == "secondary":
        lines.append(
            "INSERT INTO contact (email, phone_number, linked_id, link_precedence, created_at,"
            f" updated_at) VALUES ({e}, {p}, (:w)::int, 'secondary', now(), now());"
        )
    if kind == "merge":
        lines += [
            "\\if :n = 2",
            "UPDATE contact SET linked_id = (:w)::int, link_precedence = 'secondary',"
            " updated_at = now()"
            f" WHERE {live} AND (id = (:l)::int OR linked_id = (:l)::int);",
            "\\endif",
        ]
    lines.append("END;")
    return "\n".join(lines) + "\n"


def weights(mix: dict[str, int] = MIX) -> dict[str, float]:
    """Script name -> weight, the lookups split in three like the Lua script."""
    result: dict[str, float] = {}
    for kind, weight in mix.items():
        if kind == "lookup":
            for how in ("lookup_email", "lookup_phone", "lookup_both"):
                result[how] = weight / 3
        else:
            result[kind] = weight
    return result


def write_scripts(directory: Path) -> dict[str, dict[Path, int]]:
    """Write every script of both sets; returns set -> path -> integer weight (pgbench
    wants integers)."""
    result: dict[str, dict[Path, int]] = {}
    for name, make in (("ours", script), ("minimal", minimal_script)):
        where = directory if name == "ours" else directory / name
        where.mkdir(parents=True, exist_ok=True)
        result[name] = {}
        for kind, weight in weights().items():
            path = where / f"{kind}.sql"
            path.write_text(make(kind))
            result[name][path] = max(1, round(weight * 3))
    return result


def run_pgbench(
    dsn_database: str,
    scripts: dict[Path, int],
    *,
    clients: int,
    seconds: int,
    people: int,
    nonce: str,
    hot: int = 10,
    mode: str = "simple",
) -> dict[str, float]:
    """One pgbench run; returns tps, latency average and failures."""
    command = [
        "pgbench", "-n", "-h", "127.0.0.1", "-U", "postgres", "-M", mode,
        "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
        "-D", f"people={people}", "-D", f"hot={hot}", "-D", f"nonce={nonce}",
    ]  # fmt: skip
    for path, weight in scripts.items():
        command += ["-f", f"{path}@{weight}"]
    command.append(dsn_database)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{done.stdout}\n{done.stderr}")
    out = done.stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial", out).group(1))  # type: ignore[union-attr]
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {
        "tps": tps,
        "latency_avg_ms": float(latency.group(1)) if latency else float("nan"),
        "failed": int(failed.group(1)) if failed else 0,
    }
