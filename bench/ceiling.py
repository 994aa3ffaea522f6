"""The database's own ceiling: pgbench running the SQL /identify sends, with its locks.

The scripts are generated from the statements of ``identity.graph.pg_identify`` (so the
ceiling follows the service when its SQL changes), one script per request kind of the
mix, weighted like the wrk mix. Each sends what the service sends for that rule: the
lock-free read in autocommit, which is all a repeat lookup (rule 4) needs; else BEGIN,
the advisory locks and the root lookup ``FOR UPDATE`` in one message, the
held-flags-and-answer query, the write (with the fresh answer) when the rule writes,
COMMIT.
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

EMAIL = "('u' || (:{var})::text || '@seed.test')"
PHONE = "('9' || lpad((:{var})::text, 10, '0'))"
NEW_EMAIL = "('n' || :nonce || '.' || :client_id || '.' || :r || '@new.test')"
NEW_PHONE = "('5' || :nonce || lpad(:client_id::text, 3, '0') || lpad(:r::text, 9, '0'))"


def _lock(*keys: str) -> str:
    hashed = ", ".join(f"hashtextextended({k}, 0)" for k in keys)
    return (
        f"SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(ARRAY[{hashed}]) AS k ORDER BY k) s"
    )


def _one_line(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip().rstrip(";")


def _fill(sql: str, **values: str) -> str:
    return _one_line(sql % values)


def _roots(e: str, p: str) -> str:
    roots = _fill(pg_identify._ROOTS, e=e, p=p)
    return (
        "SELECT coalesce((array_agg(id ORDER BY created_at, id))[1], 0) AS w,"
        " coalesce((array_agg(id ORDER BY created_at, id))[2], 0) AS l, count(*) AS n"
        f" FROM ({roots}) r \\gset"
    )


def script(kind: str) -> str:
    """The pgbench script of one request kind."""
    lines = ["\\set pid random(:hot, :people - 1)", "\\set q random(:hot, :people - 1)"]
    if kind == "hot":
        lines[0] = "\\set pid random(0, :hot - 1)"
    lines.append("\\set r random(1, 999999999)")
    email, phone = EMAIL.format(var="pid"), PHONE.format(var="pid")
    e, p = {
        "lookup_email": (email, "NULL"),
        "lookup_phone": ("NULL", phone),
        "lookup_both": (email, phone),
        "hot": (email, phone),
        "secondary": (email, NEW_PHONE),
        "person": (NEW_EMAIL, NEW_PHONE),
        "merge": (email, PHONE.format(var="q")),
    }[kind]
    keys = [k for k, v in (("'e:' || " + e, e), ("'p:' || " + p, p)) if v != "NULL"]
    answer = _fill(pg_identify._ANSWER, e=e, p=p, w=":w", roots="ARRAY[:w, :l]")
    lines.append(_fill(pg_identify._PEEK, e=e, p=p) + ";")  # autocommit: no BEGIN
    if kind in ("lookup_email", "lookup_phone", "lookup_both", "hot"):
        return "\n".join(lines) + "\n"  # rule 4: the lock-free read is all
    lines += ["BEGIN;", _lock(*keys) + " \\;", _roots(e, p)]

    def insert(link: str, precedence: str) -> str:
        return _fill(pg_identify._INSERT, e=e, p=p, link=link, precedence=precedence,
                     created="clock_timestamp()")  # fmt: skip

    if kind == "person":
        lines.append(insert("NULL", "'primary'") + " RETURNING id;")
    else:
        lines.append(answer + ";")
    if kind == "secondary":
        lines += [insert(":w", "'secondary'") + " \\;", answer + ";"]
    if kind == "merge":
        demote = _fill(pg_identify._DEMOTE, w=":w", now="clock_timestamp()", losers="ARRAY[:l]")
        lines += ["\\if :n = 2", demote + ";", "\\endif"]
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


def write_scripts(directory: Path) -> dict[Path, int]:
    """Write every script; returns path -> integer weight (pgbench wants integers)."""
    directory.mkdir(parents=True, exist_ok=True)
    result = {}
    for kind, weight in weights().items():
        path = directory / f"{kind}.sql"
        path.write_text(script(kind))
        result[path] = max(1, round(weight * 3))
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
) -> dict[str, float]:
    """One pgbench run; returns tps, latency average and failures."""
    command = [
        "pgbench", "-n", "-h", "127.0.0.1", "-U", "postgres",
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
