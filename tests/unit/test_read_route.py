"""ReadRoute's choice (identity/storage/replica.py): the replica's state is checked at
most once per interval, a lagging or unreachable replica sends reads to the primary,
and every moved read is counted. In-memory SQLite engines stand in for both databases."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from identity import observe
from identity.storage.replica import ReadRoute


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedRoute(ReadRoute):
    """The lag the replica reports, scripted: a number (ms), or None for unreachable."""

    lag: float | None = 0.0
    checks = 0

    def _check(self) -> None:
        self.checks += 1
        if self.lag is None:
            self._mark("unreachable", "scripted")
        elif self.lag > self.max_lag_ms:
            self._mark("lag", f"{self.lag} ms")
        else:
            self._mark(None, f"{self.lag} ms")


@pytest.fixture
def signals() -> Iterator[list[tuple[str, Mapping[str, Any]]]]:
    seen: list[tuple[str, Mapping[str, Any]]] = []

    def observer(name: str, fields: Mapping[str, Any]) -> None:
        seen.append((name, fields))

    observe.subscribe(observer)
    yield seen
    observe.unsubscribe(observer)


def which(route: ReadRoute) -> str:
    return str(route.run(lambda conn: conn.execute(text("SELECT :n"), {"n": "x"}).scalar()))


def test_checked_at_most_once_per_interval_and_lag_moves_reads_to_the_primary(
    signals: list[tuple[str, Mapping[str, Any]]],
) -> None:
    primary, replica = create_engine("sqlite://"), create_engine("sqlite://")
    clock = Clock()
    route = ScriptedRoute(primary, replica, max_lag_ms=500, clock=clock)
    for _ in range(50):
        which(route)
    assert route.checks == 1 and route.using_replica
    route.lag = 2000
    clock.now += 0.5
    which(route)
    assert route.checks == 1 and route.using_replica  # not checked again within the second
    clock.now += 0.6
    for _ in range(3):
        which(route)
    assert route.checks == 2 and not route.using_replica
    assert [f["reason"] for n, f in signals if n == observe.REPLICA_FALLBACK] == ["lag"] * 3
    route.lag = None
    clock.now += 1.1
    which(route)
    assert not route.using_replica and signals[-1][1]["reason"] == "unreachable"
    route.lag = 10
    clock.now += 1.1
    which(route)
    assert route.using_replica and route.checks == 4


def test_without_a_replica_everything_reads_the_primary(
    signals: list[tuple[str, Mapping[str, Any]]],
) -> None:
    route = ReadRoute(create_engine("sqlite://"), None, max_lag_ms=1000)
    assert which(route) == "x" and not route.using_replica and signals == []
