"""Instances that poll for their next call, through a real, sandboxed server
(docs/settings.md, ``instance_busy_poll_microseconds``; docs/architecture.md, "Waiting for the
next call"): by default a Python instance polls up to 500 us for a call that follows its answer
closely, in the sandbox too (it reads the machine's idle time from its own /proc), forked or
not; a server set to 0 has instances that sleep until each call. Either way every call gets
its own answer.
"""

from __future__ import annotations

import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

ADD = f"{PROJECTS / 'calc'}/calc.py:add"
POLLS = (
    "[modelhost] waiting for calls: polls up to 500 us for a call that follows an answer "
    "closely, while the machine has a core to spare"
)
SLEEPS = "[modelhost] waiting for calls: sleeps until each call (it never polls)"


def _waits(server: Server, model: str, count: int) -> dict[str, str]:
    """What each of the model's ``count`` ready instances said about waiting for calls."""
    client = server.client()

    def said() -> dict[str, str] | None:
        ready = {i.id for i in client.instances(model) if i.state == "ready"}
        lines = {
            line["instance"]: line["text"]
            for line in client.logs(model, tail=1000)
            if "waiting for calls" in line["text"]
        }
        return lines if len(ready) == count and set(lines) == ready else None

    return wait_until(said, timeout=60)


def _calls_in_a_row(server: Server, model: str, count: int) -> None:
    """``count`` calls, each sent as soon as the one before was answered: the pattern that
    makes an instance poll. Each answer is its own call's."""
    for x in range(count):
        answer = server.invoke(model, {"data": {"x": x, "y": 1000}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == x + 1000


def test_instances_poll_for_a_call_that_follows_closely_by_default(server: Server) -> None:
    client = server.client()
    client.publish(ADD, name="polling")
    _calls_in_a_row(server, "polling", 300)
    client.update_model("polling", instance_count=2)  # the second one forked
    assert set(_waits(server, "polling", 2).values()) == {POLLS}
    _calls_in_a_row(server, "polling", 300)


def test_a_server_set_to_zero_has_instances_that_sleep_until_each_call(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {"MODELHOST_INSTANCE_BUSY_POLL_MICROSECONDS": "0"}
    with running_server(tmp_path_factory.mktemp("no-poll") / "home", env) as server:
        server.client().publish(ADD, name="sleeping")
        _calls_in_a_row(server, "sleeping", 50)
        assert set(_waits(server, "sleeping", 1).values()) == {SLEEPS}
