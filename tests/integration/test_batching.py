"""Adaptive batching through a real server: a batching function's calls leave alone when an
instance is free, and together when every instance is busy.

The fixture's function (``tests/fixtures/projects/batching``) answers each input with its sum
and the size of the batch it came in, so the batches the server formed can be read off the
answers. A call with ``hold`` keeps the one instance busy until the test creates ``gate`` in
the version's working directory.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelhost import errors
from tests.helpers import PROJECTS, Server, wait_until

pytestmark = pytest.mark.integration

TOTAL = f"{PROJECTS / 'batching'}/batching.py:total"


def _publish(server: Server, name: str, max_size: int, max_wait_ms: float) -> dict[str, Any]:
    return server.client().publish(
        TOTAL, name=name, batch_max_size=max_size, batch_max_wait_ms=max_wait_ms
    )


class Calls:
    """Calls made at once from threads, with their answers."""

    def __init__(self, server: Server, model: str) -> None:
        self.url = f"{server.url}/models/{model}/latest/model"
        self.answers: list[httpx.Response] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self, body: object) -> None:
        def call() -> None:
            answer = httpx.post(self.url, json=body, timeout=60)
            with self._lock:
                self.answers.append(answer)

        thread = threading.Thread(target=call)
        thread.start()
        self._threads.append(thread)

    def wait(self) -> list[httpx.Response]:
        for thread in self._threads:
            thread.join(60)
        return self.answers


def _metric(server: Server, name: str, **labels: str) -> float:
    answer = httpx.get(
        f"{server.url}/metrics",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
    )
    wanted = sorted(labels.items())
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == name and sorted(sample.labels.items()) == wanted:
                return float(sample.value)
    return 0.0


@pytest.fixture
def held(server: Server) -> Iterator[Any]:
    """``hold(model)`` keeps the model's one instance busy until the test's end or ``open()``."""
    gates: list[Path] = []
    threads: list[Calls] = []

    class Hold:
        def __call__(self, model: str, version_id: str) -> None:
            gate = server.home / "work" / version_id / "gate"
            gate.unlink(missing_ok=True)
            gates.append(gate)
            calls = Calls(server, model)
            calls.start({"data": {"x": 0, "y": 0, "hold": True}})
            threads.append(calls)
            wait_until(
                lambda: _metric(server, "modelhost_calls_in_flight", model=model, version="1")
            )

        def open(self) -> None:
            for gate in gates:
                gate.touch()

    hold = Hold()
    yield hold
    hold.open()
    for calls in threads:
        calls.wait()


def test_a_lone_caller_gets_its_answer_in_a_batch_of_one_with_the_usual_envelope(
    server: Server,
) -> None:
    version = _publish(server, "batch-lone", 8, 50)
    assert version["batch"] == {"max_size": 8, "max_wait_ms": 50.0}
    answer = server.invoke("batch-lone", {"data": {"x": 1, "y": 2}})
    assert answer.status_code == 200
    body = answer.json()
    assert body["result"] == {"sum": 3, "batch": 1}
    assert len(body["request_id"]) == 16
    assert answer.headers["x-request-id"] == body["request_id"]
    assert body["timing"] > 0
    assert isinstance(body["model_time_in_ms"], int)
    assert body["release"]["model_version_number"] == 1
    assert server.invoke("batch-lone", {"parameters": [3, 4]}).json()["result"]["sum"] == 7


def test_calls_that_wait_for_a_busy_instance_leave_as_one_full_batch(
    server: Server, held: Any
) -> None:
    version = _publish(server, "batch-full", 4, 10_000)
    held("batch-full", version["id"])
    calls = Calls(server, "batch-full")
    for n in range(4):
        calls.start({"data": {"x": n, "y": 10}})
    # four calls fill a batch: it is sent ahead while the instance is still busy
    wait_until(
        lambda: _metric(server, "modelhost_batch_size_count", model="batch-full", version="1") == 2
    )
    held.open()
    answers = calls.wait()
    assert sorted(a.json()["result"]["sum"] for a in answers) == [10, 11, 12, 13]
    assert {a.json()["result"]["batch"] for a in answers} == {4}
    assert len({a.json()["request_id"] for a in answers}) == 4


def test_a_partial_batch_leaves_after_the_longest_wait_while_the_instance_is_still_busy(
    server: Server, held: Any
) -> None:
    version = _publish(server, "batch-partial", 8, 1500)
    held("batch-partial", version["id"])
    labels = {"model": "batch-partial", "version": "1"}
    calls = Calls(server, "batch-partial")
    calls.start({"data": {"x": 0, "y": 0}})
    wait_until(lambda: _metric(server, "modelhost_calls_queued", **labels) >= 1)
    for n in (1, 2):
        calls.start({"data": {"x": n, "y": 0}})
    # Three calls, not the eight of a full batch, leave together once the first has waited
    # 1.5 s, sent ahead to the instance the held call still keeps busy.
    wait_until(lambda: _metric(server, "modelhost_batch_size_sum", **labels) == 4)
    assert _metric(server, "modelhost_batch_size_count", **labels) == 2
    assert _metric(server, "modelhost_calls_queued", **labels) == 0
    held.open()
    answers = calls.wait()
    assert sorted(a.json()["result"]["sum"] for a in answers) == [0, 1, 2]
    assert {a.json()["result"]["batch"] for a in answers} == {3}


def test_waiting_calls_leave_together_as_soon_as_the_instance_is_free(
    server: Server, held: Any
) -> None:
    version = _publish(server, "batch-freed", 8, 10_000)
    held("batch-freed", version["id"])
    calls = Calls(server, "batch-freed")
    for n in range(3):
        calls.start({"parameters": [n, 1]})
    wait_until(
        lambda: _metric(server, "modelhost_calls_queued", model="batch-freed", version="1") == 3
    )
    held.open()
    answers = calls.wait()
    assert sorted(a.json()["result"]["sum"] for a in answers) == [1, 2, 3]
    assert {a.json()["result"]["batch"] for a in answers} == {3}


def test_a_batch_larger_than_max_queued_requests_fills_while_the_instance_is_busy(
    server: Server, held: Any
) -> None:
    # docs/settings.md: a batching version's queue holds max_queued_requests (100 here, the
    # default) calls more than one full batch.
    version = _publish(server, "batch-big", 200, 10_000)
    held("batch-big", version["id"])
    calls = Calls(server, "batch-big")
    for n in range(110):
        calls.start({"data": {"x": n, "y": 0}})
    wait_until(
        lambda: _metric(server, "modelhost_calls_queued", model="batch-big", version="1") == 110
    )
    held.open()
    answers = calls.wait()
    assert [a.status_code for a in answers] == [200] * 110
    assert sorted(a.json()["result"]["sum"] for a in answers) == list(range(110))
    assert {a.json()["result"]["batch"] for a in answers} == {110}


def test_a_batch_that_raises_falls_back_to_one_call_at_a_time_and_only_the_bad_call_fails(
    server: Server, held: Any
) -> None:
    version = _publish(server, "batch-raises", 3, 10_000)
    held("batch-raises", version["id"])
    calls = Calls(server, "batch-raises")
    calls.start({"data": {"x": 1, "y": 1}})
    calls.start({"data": {"x": 5, "y": 5, "fail": True}})
    calls.start({"data": {"x": 2, "y": 2}})
    labels = {"model": "batch-raises", "version": "1"}
    wait_until(lambda: _metric(server, "modelhost_batch_size_sum", **labels) == 4)
    held.open()
    answers = calls.wait()
    good = sorted(a.json()["result"]["sum"] for a in answers if a.status_code == 200)
    bad = [a for a in answers if a.status_code != 200]
    assert good == [2, 4]
    assert len(bad) == 1
    assert bad[0].status_code == 500
    error = bad[0].json()["error"]
    assert error["code"] == "model_error"
    assert error["message"].startswith("total raised ValueError: cannot add")
    assert "Traceback" not in bad[0].text
    log = "\n".join(line["text"] for line in server.client().logs("batch-raises", tail=200))
    assert "Traceback" in log
    assert "ValueError: cannot add" in log


def test_a_batch_with_the_wrong_number_of_results_fails_only_the_call_that_causes_it(
    server: Server, held: Any
) -> None:
    version = _publish(server, "batch-short", 2, 10_000)
    held("batch-short", version["id"])
    calls = Calls(server, "batch-short")
    calls.start({"data": {"x": 1, "y": 2}})
    calls.start({"data": {"x": 0, "y": 0, "short": True}})
    labels = {"model": "batch-short", "version": "1"}
    wait_until(lambda: _metric(server, "modelhost_batch_size_sum", **labels) == 3)
    held.open()
    by_status = {a.status_code: a.json() for a in calls.wait()}
    assert by_status[200]["result"] == {"sum": 3, "batch": 1}
    assert by_status[500]["error"]["message"] == (
        "total returned 0 results for 1 input; a batching function returns a list with one "
        "result per input, in order."
    )


def test_a_call_past_the_timeout_in_a_batch_is_a_504_and_its_instance_is_replaced(
    server: Server,
) -> None:
    _publish(server, "batch-timeout", 4, 10)
    client = server.client()
    client.update_model("batch-timeout", timeout_seconds=1)
    first = client.instances("batch-timeout")[0]["id"]
    answer = server.invoke("batch-timeout", {"data": {"x": 0, "y": 0, "hold": True}})
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "model_timeout"
    wait_until(
        lambda: any(
            i["id"] != first and i["state"] == "ready" for i in client.instances("batch-timeout")
        )
    )
    assert server.invoke("batch-timeout", {"data": {"x": 2, "y": 2}}).json()["result"]["sum"] == 4


def test_batching_goes_on_through_a_version_switch_with_no_failed_call(server: Server) -> None:
    _publish(server, "batch-switch", 16, 2)
    stop = threading.Event()
    statuses: list[int] = []
    numbers: set[int] = set()

    def caller() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                answer = http.post(
                    f"{server.url}/models/batch-switch/latest/model",
                    json={"data": {"x": 1, "y": 1}},
                )
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    numbers.add(answer.json()["release"]["model_version_number"])

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(statuses) > 50)
        _publish(server, "batch-switch", 16, 2)
        wait_until(lambda: 2 in numbers, timeout=60)
        seen = len(statuses)
        wait_until(lambda: len(statuses) > seen + 50)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert set(statuses) == {200}
    assert numbers == {1, 2}


def test_a_function_that_does_not_take_a_list_fails_to_publish_as_a_batching_function(
    server: Server,
) -> None:
    with pytest.raises(errors.BuildFailed) as failure:
        server.client().publish(
            f"{PROJECTS / 'batching'}/batching.py:pair", name="batch-pair", batch_max_size=4
        )
    assert "pair(a, b) cannot be a batching function" in str(failure.value)


def test_batching_limits_are_checked_and_changed_from_the_cli(server: Server) -> None:
    _publish(server, "batch-cli", 8, 5)
    changed = server.cli(
        "models", "update", "batch-cli", "--version", "1", "--batch-max-size", "32", check=True
    )
    assert "batches of at most 32 calls, waiting at most 5 ms" in changed.stdout
    shown = server.cli("versions", "batch-cli", "--number", "1", check=True)
    assert "at most 32 calls, waiting 5 ms" in shown.stdout

    no_version = server.cli("models", "update", "batch-cli", "--batch-max-size", "4")
    assert no_version.returncode == 2
    assert "--version N" in no_version.stderr

    server.client().publish(f"{PROJECTS / 'calc'}/calc.py:add", name="batch-cli-plain")
    plain = server.cli(
        "models", "update", "batch-cli-plain", "--version", "1", "--batch-max-size", "4"
    )
    assert plain.returncode == 1
    assert plain.stderr.startswith("Error: Version 1 of 'batch-cli-plain' was not published as")

    wait_only = server.cli(
        "publish",
        f"{PROJECTS / 'batching'}/batching.py:total",
        "--name",
        "batch-cli-bad",
        "--batch-max-wait-ms",
        "5",
    )
    # refused before the project is packed, as a misuse of the command
    assert wait_only.returncode == 2
    assert "\nError: --batch-max-wait-ms needs --batch-max-size: give both" in wait_only.stderr


def test_the_batch_size_histogram_counts_every_batch_sent(server: Server) -> None:
    _publish(server, "batch-metric", 8, 5)
    for n in range(3):
        assert server.invoke("batch-metric", {"parameters": [n, n]}).status_code == 200
    labels = {"model": "batch-metric", "version": "1"}
    wait_until(lambda: _metric(server, "modelhost_batch_size_count", **labels) == 3)
    assert _metric(server, "modelhost_batch_size_sum", **labels) == 3
    assert _metric(server, "modelhost_batch_size_bucket", le="1.0", **labels) == 3


def test_an_r_batching_function_gets_a_list_of_inputs_and_falls_back_one_at_a_time(
    server: Server, held: Any
) -> None:
    version = server.client().publish(
        f"{PROJECTS / 'r_batching'}/batching.R:total",
        name="batch-r",
        batch_max_size=3,
        batch_max_wait_ms=10_000,
    )
    lone = server.invoke("batch-r", {"data": {"x": 1, "y": 2}})
    assert lone.json()["result"] == {"sum": 3, "batch": 1}
    held("batch-r", version["id"])
    labels = {"model": "batch-r", "version": "1"}
    calls = Calls(server, "batch-r")
    for n in range(3):
        calls.start({"data": {"x": n, "y": 1}})
    wait_until(lambda: _metric(server, "modelhost_batch_size_sum", **labels) == 5)
    held.open()
    answers = calls.wait()
    assert sorted(a.json()["result"]["sum"] for a in answers) == [1, 2, 3]
    assert {a.json()["result"]["batch"] for a in answers} == {3}

    held("batch-r", version["id"])
    calls = Calls(server, "batch-r")
    calls.start({"data": {"x": 1, "y": 1}})
    calls.start({"data": {"x": 1, "y": 1, "fail": True}})
    calls.start({"data": {"x": 2, "y": 2}})
    wait_until(lambda: _metric(server, "modelhost_batch_size_sum", **labels) == 9)
    held.open()
    by_sum = {}
    for answer in calls.wait():
        if answer.status_code == 200:
            by_sum[answer.json()["result"]["sum"]] = answer.json()["result"]["batch"]
        else:
            assert answer.status_code == 500
            assert answer.json()["error"]["message"] == "total raised an error: cannot add"
    assert by_sum == {2: 1, 4: 1}
    # As a Python batch's (docs/cli.md): the batch's failure, then each call on its own
    log = "\n".join(line["text"] for line in server.client().logs("batch-r", tail=1000))
    assert re.search(
        r"a batch of 3 calls \(request \w{16} and 2 more\) failed after [\d.]+ ms: cannot add; "
        r"each of its calls is run again on its own",
        log,
    ), log


def test_an_r_batching_function_logs_requests_and_a_lone_failure_with_its_request_id(
    server: Server,
) -> None:
    client = server.client()
    client.publish(
        f"{PROJECTS / 'r_batching'}/batching.R:total",
        name="batch-r-log",
        batch_max_size=3,
        batch_max_wait_ms=20,
    )
    client.update_model("batch-r-log", log_requests=True)

    def log() -> str:
        return "\n".join(line["text"] for line in client.logs("batch-r-log", tail=1000))

    def logged_success() -> str | None:
        answer = server.invoke("batch-r-log", {"data": {"x": 20, "y": 22}})
        line = f"request {answer.headers['x-request-id']} status=200 duration_ms="
        return next((x for x in log().splitlines() if line in x), None)

    # docs/cli.md: --log-requests adds each call's input, output, status and duration
    success = wait_until(logged_success, timeout=60, interval=0.3)
    assert 'input={"data":{"x":20,"y":22}}' in success
    assert 'output={"sum":42,"batch":1}' in success
    failed = server.invoke("batch-r-log", {"data": {"x": 1, "y": 1, "fail": True}})
    assert failed.status_code == 500
    request_id = failed.headers["x-request-id"]
    # docs/api.md (R): an error's message goes to the instance log with the request id
    lines = wait_until(
        lambda: [x for x in log().splitlines() if f"request {request_id} " in x], timeout=30
    )
    assert any("failed after" in x and "cannot add" in x for x in lines), lines
    assert any("status=500" in x and '"fail":true' in x for x in lines), lines


def test_an_r_batching_function_returning_a_data_frame_gives_each_caller_its_row(
    server: Server,
) -> None:
    server.client().publish(
        f"{PROJECTS / 'r_batching'}/batching.R:frame",
        name="batch-r-frame",
        batch_max_size=3,
        batch_max_wait_ms=20,
    )
    answer = server.invoke("batch-r-frame", {"data": {"x": 21, "label": "a"}})
    assert answer.status_code == 200, answer.text
    # docs/api.md (batching functions): a data frame of one row per input, each caller its row
    assert answer.json()["result"] == {"v": 42, "label": "a"}


def test_an_r_batching_function_returning_a_matrix_gives_each_caller_its_row(
    server: Server,
) -> None:
    server.client().publish(
        f"{PROJECTS / 'r_batching'}/batching.R:rows",
        name="batch-r-matrix",
        batch_max_size=3,
        batch_max_wait_ms=20,
    )
    answer = server.invoke("batch-r-matrix", {"data": {"x": 21}})
    assert answer.status_code == 200, answer.text
    # docs/api.md (batching functions): a matrix of one row per input, each caller its row
    assert answer.json()["result"] == [21, 42]
