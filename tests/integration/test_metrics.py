"""Call metrics through a real server: the gateway counts, the API, client and CLI show."""

from __future__ import annotations

import httpx
import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server, wait_until

pytestmark = pytest.mark.integration


def test_calls_errors_and_latency_are_reported_per_version(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="counted")
    wait_until(lambda: server.invoke("counted", {"data": {"x": 1, "y": 2}}).status_code == 200)
    assert client.metrics("counted")["versions"][0]["totals"]["requests"] >= 1
    before = client.metrics("counted")["versions"][0]["totals"]["requests"]
    for _ in range(5):
        assert server.invoke("counted", {"data": {"x": 1, "y": 2}}).status_code == 200
    assert server.invoke("counted", {"data": {"x": "a", "y": 1}}).status_code == 500
    assert server.invoke("counted", {"data": {"z": 1}}).status_code == 400

    found = client.metrics("counted", minutes=5)
    assert found["model"] == "counted"
    assert found["minutes"] == 5
    [version] = found["versions"]
    assert version["version_number"] == 1
    totals = version["totals"]
    assert totals["requests"] == before + 7
    assert (totals["errors"], totals["client_errors"]) == (1, 1)
    assert 0 < totals["p50_ms"] <= totals["p99_ms"]
    assert len(version["points"]) == 5
    assert sum(p["requests"] for p in version["points"]) == totals["requests"]

    printed = server.cli("metrics", "counted", "--minutes", "5", check=True).stdout
    assert "VERSION" in printed
    assert "ERROR RATE" in printed
    row = printed.splitlines()[-1].split()
    assert row[0] == "1"
    assert row[1] == str(before + 7)


def test_metrics_need_a_model_one_can_see_and_a_minute_count_within_the_hour(
    server: Server,
) -> None:
    client = server.client()
    with pytest.raises(errors.ModelNotFound):
        client.metrics("no-such-model")
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="counted-range")
    with pytest.raises(errors.BadRequest, match="between 1 and 60"):
        client.metrics("counted-range", minutes=61)
    assert client.metrics("counted-range")["versions"] == []
    answer = httpx.get(f"{server.url}/api/v1/models/counted-range/metrics")
    assert answer.status_code == 401
    failed = server.cli("metrics", "counted-range", "--minutes", "0")
    assert failed.returncode == 2
