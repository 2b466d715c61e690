"""``/metrics`` through a real server: Prometheus's text format, parsed as Prometheus would, with
counts that match the calls made, with one gateway process and with two."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelhost import errors
from modelhost.operations.prometheus import NAMES
from tests.helpers import PROJECTS, ROOT, Server, running_server, wait_until

pytestmark = pytest.mark.integration

METRICS_TOKEN = "prometheus-scrapes-with-this-token"
DASHBOARD = ROOT / "docs" / "grafana" / "modelhost-dashboard.json"


def _dashboard_queries() -> list[str]:
    """Every PromQL expression of the shipped Grafana dashboard, and its variables' queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        queries += [target["expr"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        queries.append(variable["query"]["query"])
    return queries


def _scrape(server: Server, credential: str | None = None) -> dict[str, dict[tuple, float]]:
    """Every sample, by name, then by its labels (sorted pairs)."""
    answer = httpx.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {credential or METRICS_TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def _value(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


@pytest.mark.parametrize("processes", [1, 2])
def test_counters_match_the_calls_made_across_gateway_processes(
    tmp_path_factory: pytest.TempPathFactory, processes: int
) -> None:
    home = tmp_path_factory.mktemp(f"prometheus-{processes}") / "home"
    env = {"MODELHOST_GATEWAY_PROCESSES": str(processes), "MODELHOST_METRICS_TOKEN": METRICS_TOKEN}
    with running_server(home, env) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", file="calc.py", function="add", name="scraped")
        client.update_model("scraped", instance_count=2)  # one held by each process with two
        wait_until(lambda: [i["state"] for i in client.instances("scraped")] == ["ready"] * 2, 60)
        route = "versions/1"
        # Each call on a fresh connection: the kernel spreads them over the processes.
        statuses = [server.invoke("scraped", {"data": {"x": 1, "y": 2}}, route).status_code]
        statuses += [
            server.invoke("scraped", {"data": {"x": 1, "y": i}}, route).status_code
            for i in range(29)
        ]
        statuses += [server.invoke("scraped", {"data": {"x": "a", "y": 1}}, route).status_code]
        statuses += [server.invoke("scraped", {"data": {"z": 1}}, route).status_code]
        statuses += [server.invoke("scraped", {"data": {"z": 1}}, route).status_code]
        assert statuses == [200] * 30 + [500, 400, 400]
        labels = {"model": "scraped", "version": "1", "route": route}
        # A batching version: one after another, its calls each leave alone, a batch of one.
        client.publish(
            f"{PROJECTS / 'batching'}/batching.py:total", name="batched", batch_max_size=8
        )
        client.update_model("batched", instance_count=2)
        wait_until(lambda: [i["state"] for i in client.instances("batched")] == ["ready"] * 2, 60)
        for n in range(10):
            assert server.invoke("batched", {"parameters": [n, n]}).status_code == 200

        def counted() -> dict[str, dict[tuple, float]] | None:
            samples = _scrape(server)
            calls = _value(samples, "modelhost_request_duration_seconds_count", **labels)
            batches = _value(samples, "modelhost_batch_size_count", model="batched", version="1")
            return samples if calls >= 33 and batches >= 10 else None

        samples = wait_until(counted, timeout=15)  # gateway processes report each second
        assert _value(samples, "modelhost_requests_total", **labels, code="200") == 30
        assert _value(samples, "modelhost_requests_total", **labels, code="500") == 1
        assert _value(samples, "modelhost_requests_total", **labels, code="400") == 2
        assert _value(samples, "modelhost_request_duration_seconds_count", **labels) == 33
        assert (
            _value(samples, "modelhost_request_duration_seconds_bucket", **labels, le="+Inf") == 33
        )
        assert 0 < _value(samples, "modelhost_request_duration_seconds_sum", **labels) < 33 * 5
        # Model time: of the calls the function answered.
        assert _value(samples, "modelhost_model_duration_seconds_count", **labels) == 30
        assert _value(samples, "modelhost_instances_ready", model="scraped", version="1") == 2
        assert _value(samples, "modelhost_instance_starts_total", model="scraped", version="1") == 2
        assert _value(samples, "modelhost_calls_in_flight", model="scraped", version="1") == 0
        assert _value(samples, "modelhost_calls_queued", model="scraped", version="1") == 0
        assert _value(samples, "modelhost_builds_total", model="scraped", outcome="ready") == 1
        assert _value(samples, "modelhost_build_failures_total", model="scraped") == 0
        assert (
            _value(
                samples,
                "modelhost_build_duration_seconds",
                model="scraped",
                version="1",
                outcome="ready",
            )
            > 0
        )
        assert _value(samples, "modelhost_versions_running") == 2
        batched = {"model": "batched", "version": "1"}
        assert _value(samples, "modelhost_batch_size_count", **batched) == 10
        assert _value(samples, "modelhost_batch_size_sum", **batched) == 10
        assert _value(samples, "modelhost_batch_size_bucket", **batched, le="1.0") == 10
        assert _value(samples, "modelhost_uptime_seconds") > 0
        exposed = set(samples)
        for name in NAMES:  # every metric the docs name is there
            assert any(found.startswith(name) for found in exposed), name
        # Every query of the Grafana dashboard in docs/ names metrics this server exposes.
        queries = _dashboard_queries()
        assert len(queries) >= 14
        for query in queries:
            named = re.findall(r"\bmodelhost_[a-z_]+", query)
            assert named, query
            for name in named:
                assert name in exposed, f"{name} (in {query!r}) is not exposed"


def test_a_failed_build_is_counted(server: Server) -> None:
    client = server.client()
    with pytest.raises(errors.BuildFailed):
        client.publish(
            PROJECTS / "import_error", file="predict.py", function="predict", name="broken-build"
        )
    samples = _scrape(server, server.api_key)
    assert _value(samples, "modelhost_build_failures_total", model="broken-build") == 1
    assert _value(samples, "modelhost_builds_total", model="broken-build", outcome="failed") == 1


def test_metrics_need_an_admins_key_or_the_metrics_token(server: Server) -> None:
    url = f"{server.url}/metrics"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthenticated"
    assert "metrics_token" in missing.json()["error"]["message"]
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    assert "neither the metrics token" in wrong.json()["error"]["message"]
    # The shared server has no metrics token: the token of another server is just wrong.
    assert httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401
    client = server.client()
    client.add_user("not-an-admin", "a-long-enough-password")
    with client.login(server.url, "not-an-admin", "a-long-enough-password") as theirs:
        key = theirs.create_key("k")
    refused = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "request_id" in refused.json()
    assert httpx.get(url, headers={"Authorization": f"Bearer {server.api_key}"}).status_code == 200
