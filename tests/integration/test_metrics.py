"""Call metrics through a real server: the gateway counts, the server keeps per-minute
aggregates in its database, the API, client and CLI show them, also after a restart."""

from __future__ import annotations

import httpx
import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server, running_server, wait_until

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


def test_metrics_need_a_model_one_can_see_and_a_minute_count_within_a_week(
    server: Server,
) -> None:
    client = server.client()
    with pytest.raises(errors.ModelNotFound):
        client.metrics("no-such-model")
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="counted-range")
    with pytest.raises(errors.BadRequest, match="between 1 and 10080"):
        client.metrics("counted-range", minutes=10081)
    assert client.metrics("counted-range")["versions"] == []
    answer = httpx.get(f"{server.url}/api/v1/models/counted-range/metrics")
    assert answer.status_code == 401
    failed = server.cli("metrics", "counted-range", "--minutes", "0")
    assert failed.returncode == 2


def test_calls_made_before_a_restart_are_in_the_metrics_after_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("restarted") / "home"
    with running_server(home) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", file="calc.py", function="add", name="kept")
        statuses = []

        def call(data: dict[str, object]) -> int:
            statuses.append(server.invoke("kept", {"data": data}, "versions/1").status_code)
            return statuses[-1]

        wait_until(lambda: call({"x": 1, "y": 2}) == 200)
        for number in range(5):
            assert call({"x": 1, "y": number}) == 200
        assert call({"x": "a", "y": 1}) == 500
        assert call({"z": 1}) == 400

        def totals(found: dict[str, object]) -> dict[str, object]:
            [version] = found["versions"]  # type: ignore[misc]
            return version["totals"]  # type: ignore[no-any-return]

        wait_until(lambda: totals(client.metrics("kept"))["requests"] == len(statuses), 15)
    with running_server(home) as again:  # the same data directory, a new process
        client = again.client()
        for minutes, step in ((60, 1), (24 * 60, 15), (7 * 24 * 60, 120)):
            found = client.metrics("kept", minutes=minutes)
            assert found["step_minutes"] == step
            kept = totals(found)
            assert kept["requests"] == len(statuses)
            assert (kept["errors"], kept["client_errors"]) == (1, 1)
            assert 0 < kept["p50_ms"] <= kept["p99_ms"] <= kept["max_ms"] * 2 ** (1 / 4)
        # New calls add to the minutes already stored, counted once.
        wait_until(lambda: again.invoke("kept", {"data": {"x": 1, "y": 1}}).status_code == 200)
        wait_until(lambda: totals(client.metrics("kept"))["requests"] > len(statuses), 15)
        printed = again.cli("metrics", "kept", "--minutes", "1440", check=True).stdout
        assert printed.splitlines()[-1].split()[0] == "1"
