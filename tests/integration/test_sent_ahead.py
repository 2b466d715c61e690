"""Calls sent ahead to a busy instance (``pipeline_depth``): they wait there without their clock
running, and when the instance goes away before running them, another instance runs them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

DEPTH = 4  # one running and three sent ahead to a lone instance


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("sent-ahead") / "home"
    with running_server(home, {"MODELHOST_PIPELINE_DEPTH": str(DEPTH)}) as running:
        yield running


def _publish(server: Server, name: str, timeout_seconds: float) -> str:
    client = server.client()
    client.publish(PROJECTS / "fussy", file="model.py", function="work", name=name)
    client.update_model(name, timeout_seconds=timeout_seconds)
    wait_until(lambda: server.invoke(name, {"data": {}}).status_code == 200, timeout=60)
    instance: str = server.invoke(name, {"data": {}}).json()["result"]["instance"]
    return instance


def _post(server: Server, name: str, data: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}/models/{name}/latest/model", json={"data": data}, timeout=60)


def _busy(server: Server, name: str) -> bool:
    """Whether the model's instance is running a call (it took the first one)."""
    return any(i["busy"] for i in server.client().instances(name))


def _first_then_three(
    server: Server, name: str, first: dict[str, object], then: dict[str, object]
) -> tuple[httpx.Response, list[httpx.Response]]:
    """Send ``first``, and while it runs three more calls, which go to the same instance."""
    with ThreadPoolExecutor(4) as pool:
        head = pool.submit(_post, server, name, first)
        wait_until(lambda: _busy(server, name), timeout=30, interval=0.02)
        behind = [pool.submit(_post, server, name, then) for _ in range(3)]
        return head.result(), [future.result() for future in behind]


def test_calls_sent_behind_a_stuck_call_are_answered_by_the_replacement_instance(
    server: Server,
) -> None:
    first = _publish(server, "stuck", timeout_seconds=1.5)
    head, behind = _first_then_three(server, "stuck", {"delay": 30}, {"delay": 0})
    assert head.status_code == 504
    assert [r.status_code for r in behind] == [200, 200, 200]
    assert {r.json()["result"]["instance"] for r in behind} != {first}


def test_calls_sent_behind_a_crashing_call_are_answered_and_only_the_crashing_one_fails(
    server: Server,
) -> None:
    first = _publish(server, "crashy", timeout_seconds=30)
    head, behind = _first_then_three(server, "crashy", {"delay": 0.5, "crash": True}, {})
    assert head.status_code == 502
    assert head.json()["error"]["code"] == "instance_crashed"
    assert [r.status_code for r in behind] == [200, 200, 200]
    assert first not in {r.json()["result"]["instance"] for r in behind}


def test_time_spent_waiting_behind_other_calls_does_not_count_against_the_timeout(
    server: Server,
) -> None:
    # Four calls of 0.8 s on one instance take 3.2 s in all, over twice the 1.5 s timeout;
    # each runs well within it, so none may time out and the instance is never replaced.
    first = _publish(server, "patient", timeout_seconds=1.5)
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _post(server, "patient", {"delay": 0.8}), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.json()["result"]["instance"] for r in responses} == {first}


def test_a_version_that_runs_several_calls_at_once_still_fails_calls_sent_ahead_on_a_crash(
    tmp_path: Path,
) -> None:
    # With concurrency above 1 the server cannot know which calls had begun, so it never
    # runs one twice: every call the instance held fails with 502.
    with running_server(tmp_path / "home", {"MODELHOST_PIPELINE_DEPTH": "3"}) as running:
        client = running.client()
        client.publish(
            PROJECTS / "fussy", file="model.py", function="work", name="wide", concurrency=2
        )
        wait_until(lambda: running.invoke("wide", {"data": {}}).status_code == 200, timeout=60)
        with ThreadPoolExecutor(4) as pool:
            head = pool.submit(_post, running, "wide", {"delay": 0.5, "crash": True})
            wait_until(lambda: _busy(running, "wide"), timeout=30, interval=0.02)
            behind = [pool.submit(_post, running, "wide", {"delay": 1.0}) for _ in range(3)]
            statuses = [head.result().status_code] + [f.result().status_code for f in behind]
    assert statuses == [502, 502, 502, 502]
