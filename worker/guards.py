"""Guards for operators, beside ``GET /guards`` and its admin calls.

    python -m worker.guards list
    python -m worker.guards mark (--email ADDRESS | --phone NUMBER)
    python -m worker.guards clear GUARD_ID
    python -m worker.guards prune        # forget erased values' hashes past retention

Each mark and clear is recorded in the change feed (guard.marked / guard.cleared), with
the guard's id, never the value.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from identity.db import create_db_engine, run_in_transaction
from identity.guards import store
from identity.guards.policy import GuardPolicy
from identity.locking import lock_keys
from identity.normalize import normalize_email, normalize_phone
from identity.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.guards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="blocked patterns, generic values, suppressed count")
    mark = commands.add_parser("mark", help="mark a value generic")
    which = mark.add_mutually_exclusive_group(required=True)
    which.add_argument("--email")
    which.add_argument("--phone")
    clear = commands.add_parser("clear", help="clear a generic mark")
    clear.add_argument("guard_id", type=int)
    commands.add_parser("prune", help="forget erased values' hashes past retention")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    policy = GuardPolicy.from_settings(settings)
    engine = create_db_engine(settings)
    cause = f"cli:guards:{args.command}"
    try:
        result: Any
        if args.command == "list":
            with engine.connect() as conn:
                result = {
                    "blocked": policy.blocked_listing(),
                    "generic": store.list_generic(conn),
                    "suppressed": store.count_suppressed(conn),
                }
        elif args.command == "mark":
            if args.email is not None:
                value = ("e", normalize_email(args.email))
            else:
                value = ("p", normalize_phone(args.phone, settings.default_phone_region))
            if value[1] is None:
                parser.error("the value is empty")

            def work(conn: Any) -> Any:
                lock_keys(conn, [("e:" if value[0] == "e" else "p:") + str(value[1])])
                return store.mark_by_operator(conn, policy, value, cause)  # type: ignore[arg-type]

            try:
                result = {"guard": run_in_transaction(engine, work)}
            except store.AlreadyGeneric:
                print("guards: that value is generic already", file=sys.stderr)
                return 1
        elif args.command == "clear":
            if not run_in_transaction(
                engine, lambda conn: store.clear_generic(conn, args.guard_id, cause)
            ):
                print(f"guards: no generic value has the id {args.guard_id}", file=sys.stderr)
                return 1
            result = {"cleared": args.guard_id}
        else:
            result = {"pruned": run_in_transaction(engine, lambda c: store.prune_erased(c, policy))}
    finally:
        engine.dispose()
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
