"""Write docs/benchmarks/RESULTS.md and throughput.png from a results dict (bench/run.py).

Targets are checked here from the numbers of the same run; the prose on what bounds a
missed target lives in bench/ANALYSIS.md and is copied in under the tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ANALYSIS = Path(__file__).with_name("ANALYSIS.md")
#: Messages per rule of the first implementation (commit da8a98e), counted by hand from
#: its code: pre-ping, BEGIN, locks, roots, members (when there are roots), the write(s),
#: COMMIT.
ORIGINAL_ROUND_TRIPS = {"rule 1": 6, "rule 2": 7, "rule 3": 7, "rule 4": 6}


def fmt(s: dict[str, float], digits: int = 0, scale: float = 1.0) -> str:
    med, lo, hi = (s["median"] * scale, s["min"] * scale, s["max"] * scale)
    return f"{med:,.{digits}f} ({lo:,.{digits}f}..{hi:,.{digits}f})"


def pct(s: dict[str, float]) -> str:
    return f"{s['median']:.0%} ({s['min']:.0%}..{s['max']:.0%})"


CEILING_NAMES = {
    "ours": "our SQL, prepared",
    "minimal": "cheapest SQL, text",
    "minimal_prepared": "cheapest SQL, prepared",
}
#: The ceiling issue 12's ratio target is measured against.
TARGET_CEILING = "minimal"


def sync_table(label: str, sync: dict[str, Any]) -> list[str]:
    names = list(next(iter(sync.values()))["ceilings"])
    lines = [
        f"### /identify at {label} contacts",
        "",
        "| clients | req/s | p50 ms | p99 ms | errors | 503 | 422 | CPU ms/request: server"
        " | PostgreSQL | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, row in sync.items():
        lines.append(
            f"| {c} | {fmt(row['rps'])} | {fmt(row['p50_ms'], 1)} | {fmt(row['p99_ms'], 1)}"
            f" | {row['errors']} | {row['s503']} | {row.get('s422', 0)}"
            f" | {fmt(row['server_cpu_ms'], 2)}"
            f" | {fmt(row['pg_cpu_ms'], 2)} | {fmt(row['load'], 1)} |"
        )
    lines += [
        "",
        f"The ceilings at {label} contacts (pgbench tps, and /identify's req/s over them, run",
        "by run):",
        "",
        "| clients | "
        + " | ".join(f"{CEILING_NAMES.get(n, n)} tps | ours / it" for n in names)
        + " |",
        "|---:|" + "---:|---:|" * len(names),
    ]
    for c, row in sync.items():
        cells = " | ".join(
            f"{fmt(row['ceilings'][n]['tps'])} | {pct(row['ceilings'][n]['ratio'])}" for n in names
        )
        lines.append(f"| {c} | {cells} |")
    row = sync.get("32")
    if row and {"ours", "minimal"} <= set(row["ceilings"]):
        cl = row["ceilings"]
        ours_sql = cl["ours"]["tps"]["median"]
        share = ours_sql / cl["minimal"]["tps"]["median"]
        parts = [
            f"what our SQL costs beyond the minimum: it runs at {share:.0%}"
            " of the cheapest SQL's tps as text"
        ]
        if "minimal_prepared" in cl:
            parts.append(f"{ours_sql / cl['minimal_prepared']['tps']['median']:.0%} prepared")
        lines += [
            "",
            f"At 32 clients, {', '.join(parts)}; what the server costs beyond its SQL:"
            f" /identify runs at {cl['ours']['ratio']['median']:.0%} of our SQL's tps.",
        ]
    return [*lines, ""]


def compare_table(label: str, rows: dict[str, Any]) -> list[str]:
    lines = [
        f"### Side by side at {label} contacts, 32 clients: servers, guards, the graph work",
        "",
        "Each variant on its own fresh copy of the same seeded contacts, one after the other",
        "in every round (bench/compare.py). *before graph*: commit 3b2d127 (main before",
        "links, the change feed and guards), on a database migrated by its own Alembic head",
        "and filled with the same rows, served by the same venv's packages. *graph, before",
        "issue 12*: commit 486a5c6 (main as the graph work left it, this tree's schema).",
        "",
        "| variant | req/s | p99 ms | CPU ms/request: server | PostgreSQL | errors | 422 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {fmt(row['rps'])} | {fmt(row['p99_ms'], 1)}"
            f" | {fmt(row['server_cpu_ms'], 2)} | {fmt(row['pg_cpu_ms'], 2)}"
            f" | {row['errors']} | {row['s422']} |"
        )
    now, old = rows.get("granian"), rows.get("before graph, granian")
    base = rows.get("graph, before issue 12, granian")

    def delta(a: dict[str, Any], b: dict[str, Any]) -> str:
        return (
            f"{a['rps']['median'] / b['rps']['median'] - 1:+.0%} req/s,"
            f" PostgreSQL CPU {a['pg_cpu_ms']['median'] - b['pg_cpu_ms']['median']:+.2f}"
            f" ms/request, server CPU"
            f" {a['server_cpu_ms']['median'] - b['server_cpu_ms']['median']:+.2f} ms/request"
        )

    lines.append("")
    if base and old:
        lines.append(
            "What links, the change feed and guards cost /identify (main before and after the"
            f" graph work, both under granian): {delta(base, old)}."
        )
    if base and now:
        lines.append(f"What issue 12's hot-path work gives back (same server): {delta(now, base)}.")
    if now and old:
        lines.append(f"This tree against main before the graph work: {delta(now, old)}.")
    off = rows.get("granian, guards off")
    if now and off:
        lines.append(
            f"Guards on vs off: {now['rps']['median'] / off['rps']['median'] - 1:+.0%} req/s."
        )
    return [*lines, ""]


def events_compare_table(rows: dict[str, Any]) -> list[str]:
    lines = [
        "### Events: apply_events called directly, 2 threads, batches of 500 (20,000 events)",
        "",
        "| tree | events/s | Python CPU ms per 500-event batch |",
        "|---|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {fmt(row['events_per_s'])} | {fmt(row['python_cpu_ms_per_batch'], 1)} |"
        )
    return [*lines, ""]


def erasure_table(e: dict[str, Any]) -> list[str]:
    lines = [f"## Erasure at {e['contacts']:,} contacts", ""]
    for key, what in (
        ("tenk_leaf_email", "a leaf email of the 10,000-contact cluster (no split)"),
        ("tenk_hub_phone", "the phone 5,000 of its contacts share (the cluster splits)"),
    ):
        if key in e:
            x = e[key]
            lines.append(
                f"- {what}: {x['ms']:,.0f} ms in one transaction; {x['contacts']:,} contacts"
                f" changed, {x['persons_after']:,} persons after."
            )
    if "list" in e:
        x = e["list"]
        lines.append(
            f"- `python -m worker.erase FILE`, {x['values']:,} seeded persons' emails:"
            f" {x['seconds']:.1f} s ({x['ms_per_erasure']:.1f} ms per erasure, each its own"
            f" transaction; {x['wall_seconds']:.1f} s with the process start)."
        )
    return [*lines, ""]


def per_request_median(entry: dict[str, Any], kind: str) -> float:
    import statistics

    return statistics.median(run[kind]["median"] for run in entry["per_request"])


def targets(results: dict[str, Any]) -> list[str]:
    rows = ["| target | measured | met |", "|---|---|---|"]
    sizes = results["sizes"]
    for label, entry in sizes.items():
        sync = entry.get("sync", {})
        if "32" in sync and TARGET_CEILING in sync["32"]["ceilings"]:
            r = sync["32"]
            ratio = r["ceilings"][TARGET_CEILING]["ratio"]["median"]
            p99 = r["p99_ms"]["median"]
            cpu = r["server_cpu_ms"]["median"]
            rows.append(
                f"| {label}: 32 clients >= 50% of the cheapest-SQL ceiling | {ratio:.1%}"
                f" (median of the runs' ratios)"
                f" | {'yes' if ratio >= 0.5 else 'no'} |"
            )
            rows.append(
                f"| {label}: 32 clients p99 <= 50 ms | {p99:.1f} ms | "
                f"{'yes' if p99 <= 50 else 'no'} |"
            )
            rows.append(
                f"| {label}: 32 clients 0 errors | {r['errors']} errors, {r['s503']} x 503"
                f" ({r.get('s422', 0)} x 422: every value ignored by a guard, a correct answer)"
                f" | {'yes' if r['errors'] == 0 and r['s503'] == 0 else 'no'} |"
            )
            rows.append(
                f"| {label}: 32 clients server CPU <= 0.35 ms/request | {cpu:.2f} ms |"
                f" {'yes' if cpu <= 0.35 else 'no'} |"
            )
        if "256" in sync:
            r = sync["256"]
            rows.append(
                f"| {label}: 256 clients, every request 200 or 503 | {r['requests']:,}"
                f" requests, {r['s503']} x 503, {r.get('s422', 0)} x 422,"
                f" {r['errors']} other errors; p99 {r['p99_ms']['median']:.0f} ms | "
                + (
                    "no"
                    if r["errors"]
                    else "yes"
                    if not r.get("s422")
                    else "yes, but for the"
                    " 422s: requests whose every value a guard ignored (a correct answer)"
                )
                + " |"
            )
    labels = [k for k in sizes if "per_request" in sizes[k]]
    if len(labels) > 1:
        base = labels[0]
        for label in labels[1:]:
            for kind in ("lookup", "secondary", "person"):
                a = per_request_median(sizes[base], kind)
                b = per_request_median(sizes[label], kind)
                rows.append(
                    f"| {kind} cost at {label} within 20% of {base} | {b:.2f} ms vs"
                    f" {a:.2f} ms ({b / a - 1:+.0%}) | {'yes' if b <= a * 1.2 else 'no'} |"
                )
    for entry in sizes.values():
        clusters = entry.get("clusters")
        if clusters:
            trips = {clusters[f"pg:lookup:{n}"]["round_trips"] for n in (1, 100, 10000)}
            rows.append(
                f"| 10,000-member cluster answered with a constant number of queries |"
                f" {sorted(trips)} round trips for 1 / 100 / 10,000 members |"
                f" {'yes' if len(trips) == 1 else 'no'} |"
            )
    a = results.get("async", {})
    if "partitions" in a:
        two = a["partitions"].get("2")
        if two:
            eps, ratio = two["events_per_s"]["median"], two["ratio"]["median"]
            rows.append(
                f"| async: >= 25,000 events/s end to end with 2 partitions | {eps:,.0f} |"
                f" {'yes' if eps >= 25000 else 'no'} |"
            )
            rows.append(
                f"| async: >= 80% of the set-based ceiling | {ratio:.0%} |"
                f" {'yes' if ratio >= 0.8 else 'no'} |"
            )
    return [*rows, ""]


def growth_tables(label: str, entry: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "per_request" in entry:
        lines += [
            f"### One client, in-process, at {label} contacts (ms per request)",
            "",
            "| request | median of run medians (min..max) |",
            "|---|---:|",
        ]
        for kind in ("lookup", "secondary", "person"):
            values = [run[kind]["median"] for run in entry["per_request"]]
            s = {"median": sorted(values)[len(values) // 2], "min": min(values), "max": max(values)}
            lines.append(f"| {kind} | {fmt(s, 2)} |")
        lines.append("")
    if "round_trips" in entry:
        rt = entry["round_trips"]
        lines += [
            f"### Messages per request at {label} (BEGIN and COMMIT included)",
            "",
            "As POST /identify sends them now; the portable path (identity/graph/services.py, what",
            "SQLite runs) on PostgreSQL; and the original path of commit da8a98e (pool",
            "pre-ping, BEGIN, advisory locks, roots, members, write, COMMIT).",
            "",
            "| rule | now | portable path | original |",
            "|---|---:|---:|---:|",
        ]
        for key in [k for k in rt if k.startswith("pg:")]:
            rule = key[3:]
            lines.append(
                f"| {rule} | {rt[key]} | {rt.get('portable:' + rule, '')}"
                f" | {ORIGINAL_ROUND_TRIPS.get(rule.split(' (')[0], '')} |"
            )
        lines.append("")
    if "clusters" in entry:
        cl = entry["clusters"]
        lines += [
            f"### Cluster size at {label} contacts (ms, median (min..max), round trips)",
            "",
            "| request | now | messages | portable path | messages |",
            "|---|---:|---:|---:|---:|",
        ]
        for key in [k for k in cl if k.startswith("pg:")]:
            name = key[3:].replace(":", " into ", 1) if "merge" not in key else key[3:]
            old = cl.get("portable:" + key[3:])
            lines.append(
                f"| {name} | {fmt(cl[key], 1)} | {cl[key]['round_trips']} | "
                f"{fmt(old, 1) if old else ''} | {old['round_trips'] if old else ''} |"
            )
        lines.append("")
    if "plans" in entry:
        pl = entry["plans"]
        lines += [
            f"### Plans at {label} contacts: EXPLAIN ANALYZE, ms (medians)",
            "",
            "The lock-free read (`_PEEK`, by the cluster's email) and the answer (`_ANSWER`),",
            "sent as text (planned each time) and prepared as the service sends them now.",
            "",
            "| statement, cluster size | text: planning | text: execution"
            " | prepared: execution (generic plan) |",
            "|---|---:|---:|---:|",
        ]
        for key, row in pl.items():
            lines.append(
                f"| {key.replace(':', ', ')} | {row['text_planning_ms']:.3f}"
                f" | {row['text_execution_ms']:.3f} | {row['prepared_execution_ms']:.3f} |"
            )
        lines.append("")
    return lines


def async_table(a: dict[str, Any]) -> list[str]:
    if "partitions" not in a:
        return ["### Async", "", f"Not measured: {a.get('skipped', 'not run')}.", ""]
    lines = [
        f"### Async: {a['events']:,} events published, time until all applied",
        "",
        "| partitions | events/s end to end | set-based ceiling events/s | ours / ceiling |",
        "|---:|---:|---:|---:|",
    ]
    for n, row in a["partitions"].items():
        lines.append(
            f"| {n} | {fmt(row['events_per_s'])} | {fmt(row['ceiling_per_s'])} |"
            f" {pct(row['ratio'])} |"
        )
    return [*lines, ""]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, entry in results["sizes"].items():
        sync = entry.get("sync")
        if not sync:
            continue
        xs = [int(c) for c in sync]
        left.plot(xs, [sync[c]["rps"]["median"] for c in sync], "o-", label=f"/identify {label}")
        for name in next(iter(sync.values()))["ceilings"]:
            left.plot(
                xs,
                [sync[c]["ceilings"][name]["tps"]["median"] for c in sync],
                "s--",
                label=f"pgbench, {CEILING_NAMES.get(name, name)} {label}",
            )
        right.plot(xs, [sync[c]["p99_ms"]["median"] for c in sync], "o-", label=f"p99 {label}")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients (connections)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("requests (transactions) per second")
    left.set_title("Throughput vs clients (medians)")
    right.set_ylabel("p99 latency, ms")
    right.set_yscale("log")
    right.axhline(50, color="red", lw=0.8, ls=":")
    right.set_title("p99 vs clients (medians; red: 50 ms target)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path) -> None:
    m, s = results["machine"], results["settings"]
    server = ", ".join(f"{k}={v}" for k, v in m["server"].items())
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (bench/run.py); do not edit by hand: the analysis comes",
        "from bench/ANALYSIS.md. Medians of the runs, with min..max in parentheses.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; PostgreSQL"
        f" {m['postgresql']}, Python {m['python']}; load generator on the same machine.",
        f"- Commit {m['commit']}, {m['date']}.",
        f"- Command: `{results['command']}` with sizes {', '.join(s['sizes'])}"
        + (
            f" (the sync tables at {', '.join(s['sync_sizes'])} only:"
            " `BENCH_SYNC_SIZES`, a reduced run)"
            if s.get("sync_sizes") and s["sync_sizes"] != s["sizes"]
            else ""
        )
        + f"; clients {', '.join(map(str, s['clients']))}; {s['runs']} runs of {s['seconds']} s"
        " each (after a 2 s warm-up), each on a fresh copy of the seeded database.",
        f"- Server: {s.get('server', 'gunicorn')} (`python -m api.serve` for granian,"
        f" gunicorn.conf.py for gunicorn) with {server}"
        + (
            "; WEB_THREADS by server: "
            + ", ".join(f"{k} {v}" for k, v in m["threads"].items())
            + " (the side-by-side table's gunicorn row included)"
            if "threads" in m
            else ""
        )
        + ".",
        f"- Load average (1 min) before: {results['load_before'][0]:.2f}, after:"
        f" {results['load_after'][0]:.2f} (2 cores shared with other work).",
        "",
        "![throughput and p99 vs clients](throughput.png)",
        "",
        "## Targets",
        "",
        *targets(results),
        "## Sync: /identify vs the database's own ceiling",
        "",
        "wrk (bench/identify.lua) against the server; the ceilings are pgbench in the same run",
        "(bench/ceiling.py, scripts in docs/benchmarks/pgbench/): *our SQL* is the statements",
        "of identity/graph/pg_identify.py with their locks, prepared as the service sends them;",
        "*cheapest SQL* is the minimum for the same work under SPEC v1 (lookups: BEGIN, the",
        "advisory locks, the rows holding the email or phone, the cluster by linked_id,",
        "COMMIT; new persons: locks, check, insert; secondaries and merges: the lookup plus",
        "the insert or the UPDATE; no links, feed or guards), as text (issue 12's definition)",
        "and prepared. Mix: 68% repeat lookups (email, phone or",
        "both), 5% hot keys (10 persons), 12% new secondaries, 12% new persons, 3% merges.",
        "errors = non-2xx other than 503 and 422, plus socket errors and timeouts; 422 = every",
        "value of the request ignored by a guard (a correct answer); load = the",
        "machine's 1-minute load average at the end of each wrk run (2 cores: above 2, other",
        "work competed for the CPU). pgbench needs a connection per client and the server",
        "allows 100: its 256-client figure is measured with 64 clients.",
        "",
    ]
    for entry in results["sizes"].values():
        if "sync" in entry:
            lines += sync_table(f"{entry['contacts']:,}", entry["sync"])
    for entry in results["sizes"].values():
        if "compare" in entry:
            lines += compare_table(f"{entry['contacts']:,}", entry["compare"])
    lines += ["## Async", "", *async_table(results.get("async", {}))]
    if "events_compare" in results:
        lines += events_compare_table(results["events_compare"])
    if "erasure" in results:
        lines += erasure_table(results["erasure"])
    lines += ["## Growth", ""]
    for entry in results["sizes"].values():
        lines += growth_tables(f"{entry['contacts']:,}", entry)
    if ANALYSIS.exists():
        lines += ["", ANALYSIS.read_text().strip(), ""]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "RESULTS.md").write_text("\n".join(lines) + "\n")
    plot(results, out_dir / "throughput.png")
