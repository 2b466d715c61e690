"""Copy-on-write instances through a real, sandboxed server: a Python version's instances are
forked from a fork server that imported the script once, unless the version was published
with ``fork=False`` or the script starts threads at import.

The fixture's function (``tests/fixtures/projects/shared``) answers with a token drawn at
import: instances that answer the same token share one import, and the one import's pages.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

WHOAMI = f"{PROJECTS / 'shared'}/shared.py:whoami"


def _ready(server: Server, model: str, count: int) -> list[Any]:
    """The model's instances once exactly ``count`` of them are ready (and none starting)."""

    def ready() -> list[Any] | None:
        found = server.client().instances(model)
        ready = [i for i in found if i.state == "ready"]
        return ready if len(ready) == count and len(found) == count else None

    return list(wait_until(ready, timeout=60))


def _answers(server: Server, model: str, instances: int) -> dict[str, dict[str, Any]]:
    """Answers by instance id, from calls made at once until every instance answered one."""
    seen: dict[str, dict[str, Any]] = {}

    def round_of_calls() -> bool:
        results: list[httpx.Response] = []

        def call() -> None:
            answer = server.invoke(model, {"data": {"seconds": 0.2}})
            results.append(answer)

        threads = [threading.Thread(target=call) for _ in range(instances * 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for answer in results:
            assert answer.status_code == 200, answer.text
            seen[answer.json()["result"]["instance"]] = answer.json()["result"]
        return len(seen) >= instances

    wait_until(round_of_calls, timeout=60)
    return seen


def _pss_and_rss_kb(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields["Pss"], fields["Rss"]


def _parent(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise AssertionError(f"no parent for {pid}")


def test_extra_instances_of_a_version_share_the_first_import(server: Server) -> None:
    client = server.client()
    client.publish(WHOAMI, name="cow-shared")
    client.update_model("cow-shared", instance_count=3)
    instances = _ready(server, "cow-shared", 3)
    assert all(i.forked for i in instances)

    answers = _answers(server, "cow-shared", 3)
    # one import: the token drawn at import and the block's address are the same in all three
    assert len({a["token"] for a in answers.values()}) == 1
    assert len({a["block"] for a in answers.values()}) == 1
    assert len({a["pid"] for a in answers.values()}) == 3
    # and the block's pages are shared: each instance's proportional share is well under
    # what it has resident (the block counts once in each Rss, a fraction of it in each Pss)
    for instance in instances:
        pss, rss = _pss_and_rss_kb(instance.pid)
        assert pss < rss * 0.6, (pss, rss)
    assert client.version("cow-shared", 1).fork is True


def test_a_version_published_without_fork_imports_fresh_for_each_instance(
    server: Server,
) -> None:
    client = server.client()
    server.cli("publish", WHOAMI, "--name", "cow-fresh", "--no-fork", check=True)
    assert client.version("cow-fresh", 1).fork is False
    shown = server.cli("versions", "cow-fresh", "--number", "1", check=True).stdout
    assert "no (each instance starts fresh)" in shown
    client.update_model("cow-fresh", instance_count=2)
    instances = _ready(server, "cow-fresh", 2)
    assert not any(i.forked for i in instances)
    answers = _answers(server, "cow-fresh", 2)
    assert len({a["token"] for a in answers.values()}) == 2


def test_a_script_that_starts_threads_at_import_gets_instances_started_fresh(
    server: Server,
) -> None:
    client = server.client()
    client.publish(f"{PROJECTS / 'threaded'}/threaded.py:whoami", name="cow-threads")
    instance = _ready(server, "cow-threads", 1)[0]
    assert instance.forked is False
    answer = server.invoke("cow-threads", {"data": {}})
    assert answer.status_code == 200, answer.text
    # one more, started after the fork server gave up: it says why it starts fresh too
    client.update_model("cow-threads", instance_count=2)
    instances = _ready(server, "cow-threads", 2)
    assert not any(i.forked for i in instances)
    logs = "\n".join(line["text"] for line in client.logs("cow-threads"))
    assert "started 1 thread(s) at import" in logs
    for each in instances:
        assert (
            f"instance {each.id} starts fresh: its script starts threads at import, which a "
            "fork would not copy" in logs
        ), logs
    # docs/cli.md: the fork server's import is the one more a --no-fork publish skips
    assert "publish with --no-fork, fork=False in the Python client, to skip that import" in logs


def test_a_script_that_imports_pyarrow_gets_forked_instances_that_allocate_with_it(
    server: Server,
) -> None:
    # pyarrow's allocator starts a thread at import (pandas imports pyarrow): it is jemalloc's,
    # which keeps it safe across a fork, so this script's instances are forked all the same.
    client = server.client()
    client.publish(f"{PROJECTS / 'arrow'}/arrow_model.py:whoami", name="cow-arrow")
    client.update_model("cow-arrow", instance_count=2)
    instances = _ready(server, "cow-arrow", 2)
    assert all(i.forked for i in instances)

    answers = _answers(server, "cow-arrow", 2)
    assert len({a["token"] for a in answers.values()}) == 1
    for n in (10, 200_000):
        answer = server.invoke("cow-arrow", {"data": {"n": n}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["sum"] == n * (n - 1) // 2 + 99_999 * 100_000 // 2
    logs = "\n".join(line["text"] for line in client.logs("cow-arrow"))
    assert "thread(s) at import" not in logs


def test_a_forked_instance_past_its_timeout_is_killed_and_replaced_by_another_fork(
    server: Server,
) -> None:
    client = server.client()
    client.publish(WHOAMI, name="cow-timeout")
    client.update_model("cow-timeout", timeout_seconds=1)
    first = _ready(server, "cow-timeout", 1)[0]
    token = server.invoke("cow-timeout", {"data": {}}).json()["result"]["token"]

    answer = server.invoke("cow-timeout", {"data": {"seconds": 30}})
    assert answer.status_code == 504, answer.text
    wait_until(lambda: not Path(f"/proc/{first.pid}").exists())
    replacement = wait_until(
        lambda: [
            i for i in client.instances("cow-timeout") if i.state == "ready" and i.id != first.id
        ]
    )[0]
    assert replacement.forked
    again = server.invoke("cow-timeout", {"data": {}})
    assert again.status_code == 200, again.text
    # forked from the same fork server: no second import
    assert again.json()["result"]["token"] == token
    assert again.json()["result"]["instance"] == replacement.id


def test_scaling_up_forks_more_instances_and_scaling_down_stops_them(server: Server) -> None:
    client = server.client()
    client.publish(WHOAMI, name="cow-scale")
    first = _ready(server, "cow-scale", 1)[0]
    token = server.invoke("cow-scale", {"data": {}}).json()["result"]["token"]

    client.update_model("cow-scale", instance_count=3)
    _ready(server, "cow-scale", 3)
    assert {a["token"] for a in _answers(server, "cow-scale", 3).values()} == {token}

    client.update_model("cow-scale", instance_count=1)
    remaining = _ready(server, "cow-scale", 1)
    for _ in range(4):
        answer = server.invoke("cow-scale", {"data": {}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["token"] == token
    assert remaining[0].pid is not None
    assert first.pid is not None
    # the stopped ones are gone, and the fork server has only the one left as its child
    fork_server = _parent(remaining[0].pid)
    children = Path(f"/proc/{fork_server}/task/{fork_server}/children").read_text().split()
    assert children == [str(remaining[0].pid)]


def test_killing_the_fork_server_leads_to_new_working_instances(server: Server) -> None:
    client = server.client()
    client.publish(WHOAMI, name="cow-killed")
    client.update_model("cow-killed", instance_count=2)
    before = _ready(server, "cow-killed", 2)
    token = server.invoke("cow-killed", {"data": {}}).json()["result"]["token"]

    os.kill(_parent(before[0].pid), signal.SIGKILL)

    def replaced() -> list[Any] | None:
        ready = [i for i in client.instances("cow-killed") if i.state == "ready"]
        fresh = [i for i in ready if i.id not in {b.id for b in before}]
        return fresh if len(fresh) == 2 and len(ready) == 2 else None

    after = wait_until(replaced, timeout=60)
    assert all(not Path(f"/proc/{b.pid}").exists() for b in before)
    # each instance's log says it ended with its fork server
    logs = "\n".join(line["text"] for line in client.logs("cow-killed"))
    for each in before:
        assert (
            f"instance {each.id} was killed by signal 9 as its fork server was killed by "
            "signal 9; it will be replaced" in logs
        ), logs
    answers = _answers(server, "cow-killed", 2)
    assert set(answers) == {i.id for i in after}
    # a new fork server imported the script again, once, for both
    assert len({a["token"] for a in answers.values()}) == 1
    assert token not in {a["token"] for a in answers.values()}


def test_forked_instances_answer_through_two_gateway_processes(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", {"MODELHOST_GATEWAY_PROCESSES": "2"}) as server:
        client = server.client()
        client.publish(WHOAMI, name="cow-gateways")
        client.update_model("cow-gateways", instance_count=2)
        instances = _ready(server, "cow-gateways", 2)
        assert all(i.forked for i in instances)
        answers = _answers(server, "cow-gateways", 2)
        assert len({a["token"] for a in answers.values()}) == 1
