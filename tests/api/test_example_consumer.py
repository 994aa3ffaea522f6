"""examples/follow_changes.py against a real served app: it follows the feed over HTTP and
the Redis Stream, resumes from the seq it stored without handling a change twice, and
starts over from ``oldestSeq`` (after its resync hook) when the feed was pruned."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from identity.feed import changes as feed
from identity.settings import Secret, Settings
from identity.storage.db import run_in_transaction
from tests.support.async_stack import RedisServer
from tests.support.db import ROOT
from tests.support.server import Server, serve

EXAMPLE = ROOT / "examples" / "follow_changes.py"
KEY = "consumer-key"
pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("follow_changes", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while it is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server(settings: Settings, engine: Engine) -> Iterator[Server]:
    env = {"DATABASE_URL": settings.database_url.get(), "API_KEYS": KEY, "WEB_CONCURRENCY": "1"}
    with serve(env) as running:
        yield running


def identify(server: Server, email: str, phone: str) -> None:
    status, body = server.request_json(
        "POST",
        "/identify",
        {"email": email, "phoneNumber": phone},
        {"Authorization": f"Bearer {KEY}"},
    )
    assert status == 200, body


def run_example(server: Server, state: Path) -> list[dict[str, Any]]:
    """The example as a user runs it, until caught up; the changes it printed."""
    base = f"http://127.0.0.1:{server.port}"
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), base, "--state", str(state), "--once"],
        env={"IDENTITY_API_KEY": KEY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_consumer_resumes_from_its_stored_seq_without_duplicates(
    server: Server, tmp_path: Path
) -> None:
    state = tmp_path / "seq"
    identify(server, "george@hillvalley.edu", "919191")
    identify(server, "biffsucks@hillvalley.edu", "717171")
    identify(server, "george@hillvalley.edu", "717171")  # a merge
    first = run_example(server, state)
    assert [(c["seq"], c["kind"]) for c in first] == [
        (1, "person.created"),
        (2, "person.created"),
        (3, "person.merged"),
    ]
    assert first[2]["payload"] == {
        "primaryContactId": 1,
        "absorbedPrimaryIds": [2],
        "movedContactIds": [2],
    }
    assert state.read_text() == "3"

    identify(server, "marty@hillvalley.edu", "919191")
    identify(server, "doc@hillvalley.edu", "1955")
    second = run_example(server, state)  # a restart: only what it has not seen
    assert [(c["seq"], c["kind"]) for c in second] == [(4, "contact.added"), (5, "person.created")]
    assert run_example(server, state) == []
    assert state.read_text() == "5"


def test_a_pruned_feed_calls_the_resync_hook_and_restarts_at_the_oldest_seq(
    server: Server, engine: Engine, tmp_path: Path
) -> None:
    example = load_example()
    state = tmp_path / "seq"
    state.write_text("1")  # a consumer that stopped after seq 1
    for n in range(4):
        identify(server, f"p{n}@hillvalley.edu", f"55500{n}")
    seen: list[int] = []
    gone: list[int] = []
    base = f"http://127.0.0.1:{server.port}"
    with pytest.raises(urllib.error.HTTPError) as refused:  # the key is what lets it in
        example.fetch(base, 0, None)
    assert refused.value.code == 401
    refused.value.close()
    follower = example.Follower(base, state, KEY, lambda c: seen.append(c["seq"]), gone.append)
    assert follower.http(once=True) == 4 and seen == [2, 3, 4]  # numbers the feed, too
    with engine.begin() as conn:
        conn.execute(text("UPDATE change SET at = at - INTERVAL '40 days' WHERE seq <= 2"))
    pruned = run_in_transaction(engine, lambda c: feed.prune(c, older_than=timedelta(days=30)))
    assert pruned == 2
    state.write_text("1")  # as if it had lost seqs 2..4: seq 2 is gone from the feed
    seen.clear()
    assert follower.http(once=True) == 4
    assert gone == [3] and seen == [3, 4]


def test_the_consumer_reads_the_stream_and_fills_a_gap_over_http(
    server: Server, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    from worker.changes_stream import ChangeStream

    example = load_example()
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    stream = ChangeStream(
        settings.model_copy(update={"redis_url": Secret(redis_server.url)}), engine
    )
    try:
        for n in range(3):
            identify(server, f"s{n}@hillvalley.edu", f"55510{n}")
        assert stream.publish_once() == 3
        seen: list[dict[str, Any]] = []
        base = f"http://127.0.0.1:{server.port}"
        follower = example.Follower(base, tmp_path / "seq", KEY, seen.append)
        assert follower.redis(redis_server.url, once=True) == 3
        assert [c["seq"] for c in seen] == [1, 2, 3]
        over_http = example.fetch(base, 0, KEY)["changes"]
        assert seen == over_http  # the same change, whichever way it came

        for n in range(3):
            identify(server, f"t{n}@hillvalley.edu", f"55520{n}")
        assert stream.publish_once() == 3
        stream.redis.xdel("identity:changes", "4-0", "5-0")  # lost: trimmed, a Redis restart
        seen.clear()
        assert follower.redis(redis_server.url, once=True) == 6
        assert [c["seq"] for c in seen] == [4, 5, 6]
    finally:
        stream.close()
        redis_server.stop()
