"""Every kind of switch under continuous calls: zero failed requests, no mix once done."""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelhost import Client
from tests.helpers import PROJECTS, Server, wait_until

pytestmark = pytest.mark.integration


def versioned_project(tmp_path: Path, tag: str) -> Path:
    project = tmp_path / f"versioned-{tag}"
    if project.exists():
        return project
    shutil.copytree(PROJECTS / "versioned", project)
    (project / "version.txt").write_text(tag)
    return project


@dataclass
class Call:
    started: float
    status: int
    version: str | None
    instance: str | None


class Load:
    """Threads calling one route non-stop, some calls slow, until stopped."""

    def __init__(self, url: str, threads: int = 4, slow: float = 0.4) -> None:
        self.url = url
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(slow,)) for _ in range(threads)]

    def _run(self, slow: float) -> None:
        rng = random.Random()
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                delay = slow if rng.random() < 0.2 else 0
                started = time.monotonic()
                response = http.post(self.url, json={"data": {"delay": delay}})
                body = response.json()
                result = body.get("result") or {}
                version, instance = result.get("version"), result.get("instance")
                self.calls.append(Call(started, response.status_code, version, instance))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        # Traffic is flowing before anything switches: every thread has had an answer.
        wait_until(lambda: len(self.calls) >= 2 * len(self._threads), timeout=60, interval=0.02)
        return self

    def calls_since(self, moment: float) -> int:
        return sum(1 for c in self.calls if c.started > moment)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.status != 200]


def _switch_under_load(
    server: Server,
    route: str,
    switch: Callable[[], None],
    done: Callable[[], bool],
) -> Load:
    with Load(f"{server.url}{route}") as load:
        switch()
        wait_until(done, timeout=60, interval=0.05)
        done_at = time.monotonic()
        # Traffic goes on after the switch: calls started afterwards have all been answered,
        # slow ones too (the old version's instances are leaving meanwhile).
        wait_until(lambda: load.calls_since(done_at) >= 20, timeout=60, interval=0.05)
    assert load.failures() == []
    # Traffic all through: calls before the switch was done and after it (a loaded machine
    # makes fewer calls in the same time, a fifth of them 0.4 s long, so no fixed count).
    assert len(load.calls) > 8
    assert any(c.started < done_at for c in load.calls)
    assert any(c.started > done_at for c in load.calls)
    load.done_at = done_at  # type: ignore[attr-defined]
    return load


def _latest_is(client: Client, model: str, number: int) -> Callable[[], bool]:
    return lambda: client.model(model)["latest_version"] == number


def test_publishing_switches_latest_without_failing_a_call(server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="sw-publish"
    )
    load = _switch_under_load(
        server,
        "/models/sw-publish/latest/model",
        lambda: client.publish(
            versioned_project(tmp_path, "2"),
            file="model.py",
            function="which",
            name="sw-publish",
            wait=False,
        ),
        _latest_is(client, "sw-publish", 2),
    )
    assert {c.version for c in load.calls} == {"1", "2"}
    assert {c.version for c in load.calls if c.started > load.done_at} == {"2"}  # type: ignore[attr-defined]


def test_rollback_and_deploy_switch_without_failing_a_call(server: Server, tmp_path: Path) -> None:
    client = server.client()
    for tag in ("1", "2"):
        client.publish(
            versioned_project(tmp_path, tag), file="model.py", function="which", name="sw-rollback"
        )
    load = _switch_under_load(
        server,
        "/models/sw-rollback/latest/model",
        lambda: client.rollback("sw-rollback"),
        _latest_is(client, "sw-rollback", 1),
    )
    assert {c.version for c in load.calls if c.started > load.done_at} == {"1"}  # type: ignore[attr-defined]
    load = _switch_under_load(
        server,
        "/models/sw-rollback/latest/model",
        lambda: client.deploy("sw-rollback", 2),
        _latest_is(client, "sw-rollback", 2),
    )
    assert {c.version for c in load.calls if c.started > load.done_at} == {"2"}  # type: ignore[attr-defined]


def test_promote_in_advanced_routing_moves_prod_without_failing_a_call(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="sw-promote"
    )
    client.set_routing("sw-promote", "advanced")
    client.promote("sw-promote", 1)
    client.publish(
        versioned_project(tmp_path, "2"), file="model.py", function="which", name="sw-promote"
    )
    latest = server.invoke("sw-promote", {"data": {}}).json()["result"]["version"]
    prod = server.invoke("sw-promote", {"data": {}}, route="labels/prod").json()
    assert (latest, prod["result"]["version"]) == ("2", "1")

    def prod_is_2() -> bool:
        return (
            client.model("sw-promote")["labels"]["prod"] == 2
            and server.invoke("sw-promote", {"data": {}}, route="labels/prod").json()["result"][
                "version"
            ]
            == "2"
        )

    load = _switch_under_load(
        server,
        "/models/sw-promote/labels/prod/model",
        lambda: client.promote("sw-promote"),
        prod_is_2,
    )
    assert {c.version for c in load.calls if c.started > load.done_at} == {"2"}  # type: ignore[attr-defined]


def _ready_ids(client: Client, model: str) -> set[str]:
    """The ready instances, by id (a pid is only known for instances on this machine)."""
    return {i["id"] for i in client.instances(model) if i["state"] == "ready"}


def test_scale_restart_and_environment_changes_replace_instances_without_failing_a_call(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="sw-restart"
    )
    route = "/models/sw-restart/latest/model"

    before = _ready_ids(client, "sw-restart")
    _switch_under_load(
        server,
        route,
        lambda: client.scale("sw-restart", 2),
        lambda: len(_ready_ids(client, "sw-restart")) == 2,
    )
    scaled = _ready_ids(client, "sw-restart")
    assert before < scaled

    _switch_under_load(
        server,
        route,
        lambda: client.restart("sw-restart"),
        lambda: (
            len(_ready_ids(client, "sw-restart")) == 2
            and not _ready_ids(client, "sw-restart") & scaled
            and len(client.instances("sw-restart")) == 2
        ),
    )
    restarted = _ready_ids(client, "sw-restart")

    def sees_variable() -> bool:
        answer = server.invoke("sw-restart", {"data": {"env": "COLOUR"}}).json()
        return (
            answer["result"]["env"] == "blue" and not _ready_ids(client, "sw-restart") & restarted
        )

    _switch_under_load(
        server, route, lambda: client.set_env("sw-restart", "COLOUR", "blue"), sees_variable
    )
    load = _switch_under_load(
        server,
        route,
        lambda: client.scale("sw-restart", 1),
        lambda: len(client.instances("sw-restart")) == 1,
    )
    assert {c.version for c in load.calls} == {"1"}
