"""docs/alerts.yml and docs/OPERATIONS.md stay true to what /metrics exposes (issue 5)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from identity.settings import Secret
from tests.conftest import make_settings
from tests.support.async_stack import RedisServer
from tests.support.db import ROOT

ALERTS = ROOT / "docs" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}


@pytest.fixture
def exposed(pg_url: str, tmp_path: Path) -> Iterator[set[str]]:
    """Every sample name a scrape can hold, with a broker configured (so all families show)."""
    redis = RedisServer(tmp_path)
    redis.start()
    app = create_app(make_settings(pg_url, redis_url=Secret(redis.url)))
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["identity.engine"].dispose()
        redis.stop()
    names = set()
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, [""]):
            names.add(family.name + suffix)
    yield names


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_rules_are_well_formed() -> None:
    found = rules()
    assert len(found) >= 8
    names = [r["alert"] for r in found]
    assert len(names) == len(set(names))
    for rule in found:
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert rule["labels"]["severity"] in {"page", "ticket"}  # type: ignore[index]
        assert rule["annotations"]["summary"]  # type: ignore[index]


def test_alerts_use_only_exposed_metrics(exposed: set[str]) -> None:
    assert "identity_queue_depth" in exposed and "identity_http_requests_total" in exposed
    for rule in rules():
        for name in re.findall(r"\bidentity_[a-z_]+", str(rule["expr"])):
            assert name in exposed, f"{rule['alert']} uses {name}, which /metrics does not expose"


def test_every_alert_and_metric_is_explained_in_the_operations_guide(exposed: set[str]) -> None:
    guide = OPERATIONS.read_text()
    for rule in rules():
        assert f"**{rule['alert']}**" in guide, f"{rule['alert']} is not explained"
    ours = {
        re.sub(r"_(bucket|count|sum)$", "", n)
        for n in exposed
        if n.startswith("identity_") and not n.endswith("_created")
    }
    for name in ours:
        assert f"`{name}" in guide, f"{name} is not in the metrics table"
