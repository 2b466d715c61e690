"""A version that raises on every call does not keep the route it took (issue 15: 16,820
failed calls until someone deployed by hand): during the switch hold its failure share is
watched, and past rollback_error_rate of rollback_min_calls the route goes back, the version
is marked failed with the reason, and the log and the audit log say so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.helpers import PROJECTS, running_server

pytestmark = pytest.mark.integration

MIN_CALLS = 10
ENV = {
    "MODELHOST_SWITCH_HOLD_SECONDS": "60",
    "MODELHOST_ROLLBACK_MIN_CALLS": str(MIN_CALLS),
    "MODELHOST_ROLLBACK_ERROR_RATE": "0.5",
}


def test_a_version_failing_every_call_loses_the_route_and_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "calc.py").write_text("def add(x, y):\n    raise ValueError('broken on purpose')\n")
    with running_server(tmp_path / "home", ENV) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
        client.publish(broken, name="calc", file="calc.py", function="add")

        statuses: list[tuple[int, int | None]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: stops once version 1 answers again
            answer = server.invoke("calc", {"data": {"x": 1, "y": 2}})
            number = answer.json().get("release", {}).get("model_version_number")
            statuses.append((answer.status_code, number))
            if answer.status_code == 200 and number == 1 and statuses[0][0] == 500:
                break

        assert statuses[0][0] == 500  # version 2 took the route first
        assert statuses[-1] == (200, 1), statuses[-5:]
        failed = [s for s in statuses if s[0] >= 500]
        assert MIN_CALLS <= len(failed) < 20 * MIN_CALLS  # the watch, not an operator, ended it
        version = client.version("calc", 2)
        assert version["status"] == "failed"
        assert version["failure"]["kind"] == "errors"
        assert "the route went back to version(s) 1" in version["failure"]["message"]
        events = client.audit("calc", action="rollback")
        assert events[0]["actor"] == "modelhost"
        assert events[0]["detail"]["automatic"] is True
        assert "rolled back" in server.log.read_text()
        more = [server.invoke("calc", {"data": {"x": 2, "y": 2}}) for _ in range(5)]
        assert [r.json()["result"] for r in more] == [4] * 5


def test_a_version_crashing_on_every_call_costs_no_failed_call(tmp_path: Path) -> None:
    crashing = tmp_path / "crashing"
    crashing.mkdir()
    (crashing / "calc.py").write_text("import os\n\ndef add(x, y):\n    os._exit(3)\n")
    with running_server(tmp_path / "home", ENV) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
        client.publish(crashing, name="calc", file="calc.py", function="add")

        answers = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: stops once version 2 has lost the route
            answer = server.invoke("calc", {"data": {"x": 1, "y": 2}})
            answers.append((answer.status_code, answer.json().get("result")))
            if client.version("calc", 2)["status"] == "failed":
                break

        assert client.version("calc", 2)["failure"]["kind"] == "crash"
        assert answers
        assert set(answers) == {(200, 3)}  # each crash was answered by version 1, still warm
        event = client.audit("calc", action="rollback")[0]
        assert event["actor"] == "modelhost"
        assert "Crashed" in event["detail"]["reason"]
