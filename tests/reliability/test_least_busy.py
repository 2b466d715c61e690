"""Least-busy dispatch (issue 15: four concurrent 1-s calls on two instances sometimes all ran
on one, answering after 1, 2, 3 and 4 s): a call goes to an idle instance when there is one, in
whichever process holds it, and is sent ahead to a busy instance only when none is idle."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

#: long enough that every call of a round is in flight while the others arrive
DELAY = 0.4


@pytest.fixture(scope="module", params=[1, 2], ids=["one process", "two gateway processes"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    processes = request.param
    home = tmp_path_factory.mktemp(f"least-busy-{processes}") / "home"
    with running_server(home, {"MODELHOST_GATEWAY_PROCESSES": str(processes)}) as running:
        client = running.client()
        # ``fussy`` answers with the id of the instance that ran the call.
        client.publish(PROJECTS / "fussy", file="model.py", function="work", name="spread")
        client.update_model("spread", instance_count=2)
        wait_until(
            lambda: [i["state"] for i in client.instances("spread")] == ["ready", "ready"],
            timeout=60,
        )
        if processes == 2:  # one instance in each process
            assert {i["gateway"] for i in client.instances("spread")} == {0, 1}
        yield running


def _round(server: Server, calls: int, field: str = "instance") -> list[str]:
    """``calls`` calls at once, each on its own connection (so the kernel picks the process);
    the instances that answered them (or their request ids, with ``field`` "request_id")."""
    start = threading.Barrier(calls)
    answers: list[str] = []

    def call() -> None:
        with httpx.Client(timeout=60) as http:
            start.wait()
            answer = http.post(
                f"{server.url}/models/spread/latest/model", json={"data": {"delay": DELAY}}
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        answers.append(body["result"]["instance"] if field == "instance" else body[field])

    threads = [threading.Thread(target=call) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == calls
    return answers


def test_two_calls_at_once_on_two_instances_each_run_on_an_idle_one(server: Server) -> None:
    for _ in range(8):
        answers = _round(server, 2)
        assert len(set(answers)) == 2, answers


def test_four_calls_at_once_on_two_instances_never_all_wait_for_one(
    server: Server, request: pytest.FixtureRequest
) -> None:
    for _ in range(6):
        answers = _round(server, 4)
        shares = sorted(Counter(answers).values())
        if request.node.callspec.params["server"] == 1:
            # One process sees every call: two go to the idle instances, and the other two
            # are sent ahead one to each.
            assert shares == [2, 2], answers
        else:
            # Two processes decide at the same moment from what each knows of the other, so
            # the calls sent ahead may both land on one instance; an idle one is never skipped.
            assert len(shares) == 2, answers


def test_a_call_passed_to_another_process_keeps_its_callers_address_in_the_request_log(
    server: Server,
) -> None:
    # Both calls of a round that the kernel gives the same process are passed one to the other
    # process: over eight rounds, calls are passed both ways.
    ids = set()
    for _ in range(8):
        ids |= set(_round(server, 2, "request_id"))

    # Request log lines are written each second.
    def logged() -> list[dict[str, object]] | None:
        lines = server.client().requests("spread", tail=1000)
        mine = [line for line in lines if line["request_id"] in ids]
        return mine if len(mine) == len(ids) else None

    lines = wait_until(logged, timeout=15)
    assert {line["source"] for line in lines} == {"127.0.0.1"}
