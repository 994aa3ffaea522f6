"""Erase a list of values, as a privacy ticket system hands them over.

    python -m worker.erase FILE [--suppress] [--dry-run] [--state FILE.state]

FILE holds one value a line: ``email:<address>``, ``phone:<number>`` or ``person:<id>``
(a bare line with an ``@`` is an email, one of digits and separators a phone); blank
lines and ``#`` comments are skipped. Each line is erased in its own transaction, the
same as ``POST /erasures``. Idempotent: erasing a value nobody holds any more erases
nothing. Resumable: the number of lines done is kept in the state file (default
FILE.state), so a run stopped half way goes on where it stopped. Progress goes to
stderr by line number and counts only: a value never appears in the output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from identity.db import create_db_engine, run_in_transaction
from identity.erasure.services import ErasureRequest, PersonNotFound, erase
from identity.errors import IdentityError, InvalidInput
from identity.normalize import normalize_email, normalize_phone, phone_spellings
from identity.settings import Settings

_PHONE_LIKE = re.compile(r"\+?[\d\s\-.()]+")


def parse_line(line: str, region: str | None) -> ErasureRequest | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("email", "phone", "person"):
        kind = "email" if "@" in text else "phone" if _PHONE_LIKE.fullmatch(text) else ""
        value = text
    if kind == "email":
        email = normalize_email(value)
        if email is None:
            raise InvalidInput("empty email", field="email")
        return ErasureRequest(emails=frozenset({email}))
    if kind == "phone":
        if normalize_phone(value, region) is None:
            raise InvalidInput("empty phone", field="phoneNumber")
        return ErasureRequest(phones=frozenset(phone_spellings(value, region)))
    if kind == "person" and value.strip().isdigit():
        return ErasureRequest(person_id=int(value.strip()))
    raise InvalidInput("a line must be email:<address>, phone:<number> or person:<id>")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.erase",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path)
    parser.add_argument("--suppress", action="store_true", help="ignore the values from now on")
    parser.add_argument("--dry-run", action="store_true", help="count, write nothing")
    parser.add_argument("--state", type=Path, help="progress file (default FILE.state)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    state = args.state or args.file.with_name(args.file.name + ".state")
    done = int(state.read_text() or 0) if state.exists() and not args.dry_run else 0
    lines = args.file.read_text(encoding="utf-8").splitlines()
    totals: dict[str, Any] = {
        "lines": len(lines),
        "skipped": done,
        "erased": 0,
        "contacts": 0,
        "links": 0,
        "events": 0,
        "refused": [],
    }
    engine = create_db_engine(settings)
    started = time.monotonic()
    try:
        for number in range(done, len(lines)):
            try:
                request = parse_line(lines[number], settings.default_phone_region)
                if request is not None:
                    request = ErasureRequest(
                        request.emails,
                        request.phones,
                        request.person_id,
                        suppress=args.suppress,
                        dry_run=args.dry_run,
                    )
                    cause = f"erase-list:{args.file.name}:{number + 1}"
                    result = run_in_transaction(
                        engine,
                        lambda conn, r=request, why=cause: erase(
                            conn, r, configured_key=settings.suppression_hash_key.get(), cause=why
                        ),
                    )
                    totals["erased"] += 1
                    for k in ("contacts", "links", "events"):
                        totals[k] += getattr(result, k)
            except PersonNotFound:
                totals["erased"] += 1  # already gone: erasing it again is a no-op
            except IdentityError as error:
                totals["refused"].append({"line": number + 1, "error": str(error)})
            if not args.dry_run:
                state.write_text(str(number + 1))
            if (number + 1) % 100 == 0 or number + 1 == len(lines):
                print(f"erase: {number + 1}/{len(lines)} lines", file=sys.stderr, flush=True)
    finally:
        engine.dispose()
    totals["seconds"] = round(time.monotonic() - started, 3)
    json.dump(totals, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if totals["refused"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
