"""Follow the identity change feed, print each change, and resume where it stopped.

    IDENTITY_API_KEY=<key> python examples/follow_changes.py http://127.0.0.1:8000
    ... --state FILE (default ./follow_changes.seq) --once (stop when caught up)
    ... --redis redis://127.0.0.1:6379/0 (read the stream identity:changes; pip install redis)

The seq of each change handled is then saved to the state file, so a restart resumes after
it; a change handled just before a crash comes again (at least once), any at or below the
saved seq is skipped (dedupe by seq). Copy it; replace ``handle`` and ``resync``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("follow_changes")


class FeedGone(Exception):
    """410: the changes after our seq were pruned; ``oldest_seq`` is the oldest kept."""

    def __init__(self, oldest_seq: int) -> None:
        self.oldest_seq = oldest_seq


def load_seq(state: Path) -> int:  # 0: from the start
    return int(state.read_text()) if state.exists() else 0


def save_seq(state: Path, seq: int) -> None:
    tmp = state.with_name(state.name + ".tmp")
    tmp.write_text(str(seq))
    os.replace(tmp, state)  # atomic: a crash leaves the old seq or the new one


def fetch(base_url: str, after: int, key: str | None, limit: int = 500) -> dict[str, Any]:
    """One page of ``GET /changes``: ``{"changes": [...], "next": seq}``."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/changes?after={after}&limit={limit}")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        with error:  # its body is open
            if error.code == 410:
                raise FeedGone(json.load(error)["oldestSeq"]) from None
            raise


def handle(change: dict[str, Any]) -> None:
    print(json.dumps(change, separators=(",", ":")), flush=True)


def resync(oldest_seq: int) -> None:
    """The feed lost what we missed: rebuild what you keep from the API (GET /persons/{id});
    the feed then resumes at ``oldest_seq`` (apply idempotently: the rebuild may show some)."""
    log.warning("changes before seq %d were pruned: full resync", oldest_seq)


@dataclass
class Follower:  # where to read, where the seq is kept, what to do with each change
    base_url: str
    state: Path
    key: str | None = None
    on_change: Callable[[dict[str, Any]], None] = handle
    on_gone: Callable[[int], None] = resync

    def _take(self, change: dict[str, Any], after: int) -> int:
        if change["seq"] <= after:  # seen already: at least once means dedupe by seq
            return after
        self.on_change(change)
        save_seq(self.state, change["seq"])
        return int(change["seq"])

    def http(self, *, once: bool = False, poll_s: float = 1.0) -> int:
        """Poll ``/changes?after=`` from the saved seq; returns the last seq when ``once``."""
        after = load_seq(self.state)
        while True:
            try:
                page = fetch(self.base_url, after, self.key)
            except FeedGone as gone:
                self.on_gone(gone.oldest_seq)
                after = gone.oldest_seq - 1
                save_seq(self.state, after)
                continue
            except (urllib.error.URLError, TimeoutError) as error:  # 503, a restart: wait
                if isinstance(error, urllib.error.HTTPError) and error.code < 500:
                    raise  # 400, 401, 403: retrying will not help
                log.warning("feed unavailable (%s); retrying", error)
                time.sleep(poll_s)
                continue
            for change in page["changes"]:
                after = self._take(change, after)
            if not page["changes"]:
                if once:
                    return after
                time.sleep(poll_s)

    def redis(self, url: str, stream: str = "identity:changes", *, once: bool = False) -> int:
        """``XREAD STREAMS <stream> <seq>-0`` from the saved seq. Seqs have no holes, so an
        entry above seq + 1 means the stream lost some (MAXLEN trimming, a Redis restart):
        those are read over HTTP first."""
        import redis  # optional: only this mode needs it

        with redis.Redis.from_url(url, decode_responses=True) as client:
            after, block = load_seq(self.state), None if once else 5000
            while True:
                found = client.xread({stream: f"{after}-0"}, count=500, block=block)
                entries = found[0][1] if found else []
                if not entries and once:
                    return after
                for _, fields in entries:
                    if int(fields["seq"]) > after + 1:
                        after = self.http(once=True)
                    change = {**fields, "seq": int(fields["seq"]), "cause": fields["cause"] or None}
                    after = self._take(change | {"payload": json.loads(fields["payload"])}, after)


def main() -> None:
    parser = argparse.ArgumentParser(description="Follow the identity change feed.")
    parser.add_argument("base_url", help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--state", type=Path, default=Path("follow_changes.seq"))
    parser.add_argument("--redis", help="read the Redis Stream at this URL instead of polling")
    parser.add_argument("--stream", default="identity:changes")
    parser.add_argument("--once", action="store_true", help="stop once caught up")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    follower = Follower(args.base_url, args.state, os.environ.get("IDENTITY_API_KEY"))
    if args.redis:
        follower.redis(args.redis, args.stream, once=args.once)
    else:
        follower.http(once=args.once)


if __name__ == "__main__":
    main()
