"""Dead letters: list them, replay them.

    python -m worker.deadletters list [--limit N]
    python -m worker.deadletters replay --all | EVENT_ID [EVENT_ID ...]

Replay takes the dead letters out and, in the same transaction, puts their events
back into the inbox (the relay publishes them to their partitions) or, without
REDIS_URL, applies them in-process. A payload that still does not validate stays
a dead letter. Output is JSON, one object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.engine import Connection

from identity import event_services
from identity.db import create_db_engine, run_in_transaction
from identity.errors import InvalidInput
from identity.events import Event, parse_event
from identity.guards.policy import GuardPolicy
from identity.settings import Settings


def replay(conn: Connection, settings: Settings, event_ids: list[str] | None) -> dict[str, Any]:
    taken = event_services.take_dead_letters(conn, event_ids)
    events: list[Event] = []
    still_bad: list[str] = []
    for letter in taken:
        try:
            events.append(parse_event(letter.payload, settings.default_phone_region, internal=True))
        except InvalidInput as error:
            event_services.record_dead_letter(
                conn, event_id=letter.event_id, payload=letter.payload, error=error.message
            )
            still_bad.append(letter.event_id)
    if events and settings.redis_url:
        event_services.accept_events(conn, events)
    elif events:
        event_services.apply_events(conn, events, GuardPolicy.from_settings(settings))
    return {
        "replayed": [e.event_id for e in events],
        "stillInvalid": still_bad,
        "mode": "queued" if settings.redis_url else "applied",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.deadletters", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="show dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=100)
    again = commands.add_parser("replay", help="send dead letters through again")
    again.add_argument("event_ids", nargs="*")
    again.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)

    settings = Settings.from_env()
    engine = create_db_engine(settings)
    try:
        if args.command == "list":
            with engine.connect() as conn:
                total = event_services.count_dead_letters(conn)
                letters = event_services.list_dead_letters(conn, limit=args.limit)
            result: dict[str, Any] = {
                "total": total,
                "deadLetters": [d.to_json() for d in letters],
            }
        else:
            if bool(args.all) == bool(args.event_ids):
                parser.error("replay takes --all or event ids, not both")
            ids = None if args.all else list(args.event_ids)
            result = run_in_transaction(engine, lambda conn: replay(conn, settings, ids))
    finally:
        engine.dispose()
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
