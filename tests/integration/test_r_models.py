"""R models through a real server and real R: the example, conversions, errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from modelhost import errors
from tests.helpers import (
    EXAMPLE,
    PROJECTS,
    ROOT,
    WINE_ROW,
    Server,
    loopback_ports,
    running_server,
    wait_until,
)

pytestmark = pytest.mark.integration

R_EXAMPLE = ROOT / "examples" / "wine_quality_r"


@pytest.fixture(scope="module")
def r_kitchen(server: Server) -> Server:
    server.client().publish(PROJECTS / "r_kitchen" / "kitchen.R:kitchen", name="r-kitchen")
    return server


def _call(server: Server, body: object, model: str = "r-kitchen") -> httpx.Response:
    return httpx.post(f"{server.url}/models/{model}/latest/model", json=body, timeout=60)


def _result(server: Server, case: str, arg: object = None) -> object:
    body = {"data": {"case": case}} if arg is None else {"data": {"case": case, "arg": arg}}
    response = _call(server, body)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_the_r_wine_example_answers_the_same_curl_with_an_integer_quality(
    server: Server, tmp_path: Path
) -> None:
    project = tmp_path / "wine_quality_r"
    shutil.copytree(R_EXAMPLE, project)
    subprocess.run(
        ["Rscript", "train.R", str(EXAMPLE / "data" / "winequality-red.csv")],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=300,
    )
    version = server.client().publish(f"{project}/predict.R:predictQuality", name="wine-r")
    assert version["status"] == "running"
    assert version["signature"] == "predictQuality(features)"
    assert version["environment"] == "r"
    # .modelignore, example.json, predict.R and results/classifier.Rda: train.R and README.md
    # are ignored
    assert version["bundle_files"] == 4
    assert version["example"] == {"parameters": [WINE_ROW]}  # from the project's example.json
    answer = _call(server, version["example"], "wine-r").json()
    assert isinstance(answer["result"], int)
    assert 3 <= answer["result"] <= 8
    assert answer["release"]["model_version_number"] == 1
    wrong = _call(server, {"parameters": [[1, 2, 3]]}, "wine-r")
    assert wrong.status_code == 500
    assert "features must be 11 numbers" in wrong.json()["error"]["message"]


@pytest.mark.parametrize(
    ("arg", "r_class", "length"),
    [
        ({"a": 1, "b": "x"}, "list", 2),
        ([1, 2, 3], "integer", 3),
        ([1.5, 2], "numeric", 2),
        ([1, 2.5, None], "numeric", 3),
        (["a", "b"], "character", 2),
        ([True, False], "logical", 2),
        ([1, "a"], "list", 2),
        ([[1, 2], [3, 4]], "list", 2),
        ("text", "character", 1),
        (7, "integer", 1),
        (7.5, "numeric", 1),
        (True, "logical", 1),
    ],
)
def test_json_arguments_arrive_as_the_documented_r_types(
    r_kitchen: Server, arg: object, r_class: str, length: int
) -> None:
    result = _result(r_kitchen, "type", arg)
    assert result["class"] == r_class  # type: ignore[index]
    assert result["length"] == length  # type: ignore[index]


def test_null_arrives_as_na_and_names_survive(r_kitchen: Server) -> None:
    na = _call(r_kitchen, {"data": {"case": "type", "arg": None}}).json()["result"]
    assert na == {"class": "logical", "names": None, "length": 1, "is_na": True}
    assert _result(r_kitchen, "type", {"a": 1, "b": 2})["names"] == ["a", "b"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("vector", [1.5, 2.5, None]),
        ("integers", [1, 2, 3]),
        ("strings", ["a", "b"]),
        ("logicals", [True, False]),
        ("named", {"a": 1, "b": "x", "c": {"d": True}}),
        ("frame", [{"x": 1, "y": "p"}, {"x": 2, "y": "q"}]),
        ("factor", ["lo", "hi", "lo"]),
        ("scalar", 42),
        ("na", None),
        ("read", "from-the-bundle"),
    ],
)
def test_r_results_come_back_as_natural_json(
    r_kitchen: Server, case: str, expected: object
) -> None:
    assert _result(r_kitchen, case) == expected


def test_positional_parameters_and_unicode_round_trip(r_kitchen: Server) -> None:
    response = _call(r_kitchen, {"parameters": ["echo", "ünïcødé ✓"]})
    assert response.json()["result"] == "ünïcødé ✓"


def test_the_script_is_sourced_once_and_calls_reuse_it(r_kitchen: Server) -> None:
    first = _result(r_kitchen, "calls")
    second = _result(r_kitchen, "calls")
    assert second == first + 1  # type: ignore[operator]
    logs = [line["text"] for line in r_kitchen.client().logs("r-kitchen", tail=1000)]
    assert sum("kitchen.R loaded" in line for line in logs) == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        (
            {"data": {"case": "raise", "arg": "boom"}},
            500,
            "model_error",
            "kitchen raised an error: bad input: boom",
        ),
        ({"data": {"case": "nan"}}, 500, "result_not_serializable", "NaN or Inf"),
        ({"data": {"case": "inf"}}, 500, "result_not_serializable", "NaN or Inf"),
        (
            {"data": {"case": "echo", "extra": 1}},
            400,
            "invalid_arguments",
            "kitchen(case, arg): unexpected argument(s) 'extra'",
        ),
        ({"data": {}}, 400, "invalid_arguments", "missing argument(s) 'case'"),
        ({"parameters": [1, 2, 3]}, 400, "invalid_arguments", "3 positional arguments given"),
        ({"data": [1]}, 400, "bad_request", "'data' must be a JSON object"),
        ({"parameters": {"a": 1}}, 400, "bad_request", "'parameters' must be a JSON array"),
        ({"neither": 1}, 400, "bad_request", "with a 'data' object (keyword arguments) or"),
        ({"data": {}, "parameters": []}, 400, "bad_request", "has both 'data' and 'parameters'"),
    ],
)
def test_r_call_errors_use_the_same_envelope_and_codes(
    r_kitchen: Server, body: object, status: int, code: str, fragment: str
) -> None:
    response = _call(r_kitchen, body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("environment", "kitchen returned an environment, which cannot be converted to JSON"),
        ("closure", "kitchen returned a function, which cannot be converted to JSON"),
        ("builtin", "kitchen returned a function, which cannot be converted to JSON"),
        ("nested_closure", "kitchen returned a function, which cannot be converted to JSON"),
        ("complex", "kitchen returned complex numbers, which JSON cannot represent"),
    ],
)
def test_an_r_value_jsonlite_cannot_convert_faithfully_is_500_result_not_serializable(
    r_kitchen: Server, case: str, fragment: str
) -> None:
    # docs/api.md (R): a value jsonlite cannot convert is 500 result_not_serializable
    response = _call(r_kitchen, {"data": {"case": case}})
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["code"] == "result_not_serializable"
    assert error["message"].startswith(fragment)
    assert "instead" in error["message"]  # it says what to return
    assert "function (y)" not in response.text  # a closure's source never reaches the caller


def test_invalid_json_is_a_400_for_r_too(r_kitchen: Server) -> None:
    response = httpx.post(
        f"{r_kitchen.url}/models/r-kitchen/latest/model",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_an_r_crash_is_a_502_and_a_stuck_call_a_504_and_both_are_replaced(
    server: Server,
) -> None:
    client = server.client()
    client.publish(PROJECTS / "r_kitchen" / "kitchen.R:kitchen", name="r-fragile")
    crashed = _call(server, {"data": {"case": "crash"}}, "r-fragile")
    assert crashed.status_code == 502
    wait_until(
        lambda: _call(server, {"data": {"case": "scalar"}}, "r-fragile").status_code == 200,
        timeout=30,
    )
    client.update_model("r-fragile", timeout_seconds=1)
    stuck = _call(server, {"data": {"case": "sleep", "arg": 30}}, "r-fragile")
    assert stuck.status_code == 504
    wait_until(
        lambda: _call(server, {"data": {"case": "scalar"}}, "r-fragile").status_code == 200,
        timeout=30,
    )


def test_r_output_reaches_the_model_log_stamped_with_its_own_time(
    server: Server, r_kitchen: Server
) -> None:
    time.sleep(0.05)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    before = now.replace("+00:00", "Z")
    _call(server, {"data": {"case": "print", "arg": "hello-from-r"}})
    [line] = wait_until(
        lambda: [
            x
            for x in server.client().logs("r-kitchen", tail=1000)
            if "kitchen says hello-from-r" in x["text"]
        ]
    )
    assert line["stream"] == "stdout"
    assert line["time"] >= before
    assert server.client().logs("r-kitchen", after=before)


BUILD_FAILURES = [
    ("r_syntax", "has a syntax error"),
    ("r_missing", "has no function named 'predictQuality'. Functions defined there: forecast"),
    ("r_not_function", "is a numeric, not a function"),
    ("r_error", "raised an error: the model file is missing"),
]


@pytest.mark.parametrize(("project", "reason"), BUILD_FAILURES, ids=[c[0] for c in BUILD_FAILURES])
def test_r_scripts_that_do_not_load_fail_the_build_with_the_reason(
    server: Server, project: str, reason: str
) -> None:
    with pytest.raises(errors.BuildFailed) as failure:
        server.client().publish(
            PROJECTS / project / "predict.R:predictQuality", name=project.replace("_", "-")
        )
    assert reason in failure.value.message
    assert "Environment: R" in failure.value.build_log


def test_without_r_publishing_an_r_model_says_how_to_install_it(tmp_path: Path) -> None:
    env = {"MODELHOST_RSCRIPT": str(tmp_path / "no-such-Rscript")}
    with running_server(tmp_path / "home", env) as server:
        with pytest.raises(errors.BadRequest, match="apt-get install r-base-core"):
            server.client().publish(PROJECTS / "r_kitchen" / "kitchen.R:kitchen", name="no-r")
        with pytest.raises(errors.ModelNotFound):
            server.client().model("no-r")


def test_an_r_models_network_cannot_be_turned_off_and_says_why(r_kitchen: Server) -> None:
    with pytest.raises(errors.BadRequest, match="R versions"):
        r_kitchen.client().update_model("r-kitchen", network=False)
    assert r_kitchen.client().model("r-kitchen")["network"] is True


def test_an_r_version_is_refused_on_a_model_whose_network_is_off(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", name="offline-py", file="calc.py", function="add")
    client.update_model("offline-py", network=False)
    with pytest.raises(errors.BadRequest, match="--network"):
        client.publish(PROJECTS / "r_kitchen" / "kitchen.R:kitchen", name="offline-py")
    assert [v["number"] for v in client.versions("offline-py")] == [1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    found, todo = set(), [pid]
    while todo:
        found.add(todo[-1])
        todo.extend(children.get(todo.pop(), []))
    return found


def test_a_stranger_connecting_to_an_r_instances_port_first_is_turned_away(
    server: Server,
) -> None:
    # Any process of the machine can reach an R instance's loopback port before the worker
    # does (docs/security.md: R models cannot turn the network off); only the worker knows
    # the nonce, so the others must change nothing.
    client = server.client()
    serving = _descendants(server.process.pid)
    before = loopback_ports(serving)
    version = client.publish(PROJECTS / "r_gated" / "gated.R:double", name="r-gated", wait=False)
    ports = wait_until(lambda: loopback_ports(serving) - before - {server.port}, timeout=60)
    (port,) = ports
    impostor = socket.create_connection(("127.0.0.1", port))
    ready = json.dumps({"pid": 1, "signature": "double(x)", "nonce": "not-the-nonce"}).encode()
    impostor.sendall(struct.pack(">IB", len(ready), 1) + ready)  # a READY frame
    silent = socket.create_connection(("127.0.0.1", port))  # connects, says nothing
    log = server.home / "logs"
    wait_until(lambda: any("turned away" in p.read_text() for p in log.rglob("*.log")), timeout=30)
    (server.home / "work" / version["id"] / "gate").touch()
    wait_until(lambda: client.version("r-gated", 1)["status"] == "running", timeout=120)
    answer = _call(server, {"data": {"x": 21}}, "r-gated")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == 42
    assert impostor.recv(1) == b""  # closed on it
    impostor.close()
    silent.close()
