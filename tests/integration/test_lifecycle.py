"""Labels, canaries, stop/start, unpublish, delete, variables, request logs, supervision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server, running_server, wait_until, worker_pid
from tests.integration.test_switches import Load, versioned_project

pytestmark = pytest.mark.integration


def _version(server: Server, model: str, route: str = "latest") -> str:
    response = server.invoke(model, {"data": {}}, route=route)
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["version"])


def test_labels_point_anywhere_and_a_canary_splits_traffic_by_weight(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    for tag in ("1", "2"):
        client.publish(
            versioned_project(tmp_path, tag), file="model.py", function="which", name="lab"
        )
    client.set_label("lab", "champion", 1)
    wait_until(lambda: _version(server, "lab", "labels/champion") == "1")
    assert _version(server, "lab", "versions/2") == "2"

    client.set_label("lab", "champion", 1, canary_version=2, canary_weight=30)
    wait_until(lambda: server.invoke("lab", {"data": {}}, "labels/champion").status_code == 200)
    releases = Counter(
        server.invoke("lab", {"data": {}}, "labels/champion").json()["release"][
            "model_version_number"
        ]
        for _ in range(200)
    )
    assert set(releases) == {1, 2}
    assert 25 <= releases[2] <= 95  # 30% of 200 = 60, with room for chance
    assert client.labels("lab") == [
        {"name": "champion", "version": 1, "canary_version": 2, "canary_weight": 30}
    ]
    client.delete_label("lab", "champion")
    wait_until(lambda: server.invoke("lab", {"data": {}}, "labels/champion").status_code == 404)

    with pytest.raises(errors.BadRequest, match="weight above 0"):
        client.set_label("lab", "x", 1, canary_version=2)
    with pytest.raises(errors.VersionNotFound):
        client.set_label("lab", "x", 9)
    with pytest.raises(errors.BadRequest, match="not a valid label"):
        client.set_label("lab", "Bad Label", 1)
    with pytest.raises(errors.BadRequest, match="'latest' is not a label"):
        client.set_label("lab", "latest", 1)


def test_stop_start_and_unpublish_answer_with_clear_messages_and_keep_data(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(versioned_project(tmp_path, "1"), file="model.py", function="which", name="life")
    client.stop("life")
    response = wait_until(
        lambda: (r := server.invoke("life", {"data": {}})).status_code == 503 and r
    )
    assert "is stopped" in response.json()["error"]["message"]
    assert response.headers["retry-after"]
    wait_until(lambda: client.instances("life") == [])
    client.start("life")
    wait_until(lambda: server.invoke("life", {"data": {}}).status_code == 200)

    client.stop("life", version=1)
    wait_until(lambda: server.invoke("life", {"data": {}}).status_code == 503)
    assert client.versions("life")[0]["status"] == "stopped"
    client.start("life", version=1)
    wait_until(lambda: server.invoke("life", {"data": {}}).status_code == 200)

    client.unpublish("life")
    response = wait_until(
        lambda: (r := server.invoke("life", {"data": {}})).status_code == 404 and r
    )
    assert "was unpublished" in response.json()["error"]["message"]
    assert client.model("life")["status"] == "unpublished"
    assert len(client.versions("life")) == 1
    client.start("life")
    wait_until(lambda: server.invoke("life", {"data": {}}).status_code == 200)


def test_delete_needs_the_name_and_removes_the_data(server: Server, tmp_path: Path) -> None:
    client = server.client()
    version = client.publish(
        versioned_project(tmp_path, "gone"), file="model.py", function="which", name="doomed"
    )
    model_id = client.model("doomed")["id"]
    with pytest.raises(errors.BadRequest, match="confirm"):
        client.delete("doomed", confirm="wrong")
    client.delete("doomed", confirm="doomed")
    with pytest.raises(errors.ModelNotFound):
        client.model("doomed")
    wait_until(lambda: server.invoke("doomed", {"data": {}}).status_code == 404)
    assert not (server.home / "logs" / model_id).exists()
    assert not (server.home / "work" / version["id"]).exists()
    assert not (server.home / "bundles" / f"{version['bundle_sha256']}.tar").exists()


def test_the_cli_asks_before_deleting(server: Server, tmp_path: Path) -> None:
    server.client().publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="cli-doomed"
    )
    env = {k: v for k, v in server.env.items() if k != "MODELHOST_PORT"}
    refused = subprocess.run(
        [sys.executable, "-m", "modelhost", "delete", "cli-doomed"],
        input="nope\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "nothing was deleted" in refused.stderr
    server.client().model("cli-doomed")
    accepted = server.cli("delete", "cli-doomed", "--yes", check=True)
    assert "deleted" in accepted.stdout


def test_variables_reach_instances_and_secret_values_never_leave_the_server(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(versioned_project(tmp_path, "1"), file="model.py", function="which", name="vars")
    secret = "s3cr3t-value-0451"
    client.set_env("vars", "PLAIN", "hello")
    client.set_env("vars", "TOKEN", secret, secret=True)
    wait_until(
        lambda: server.invoke("vars", {"data": {"env": "TOKEN"}}).json()["result"]["env"] == secret
    )
    assert server.invoke("vars", {"data": {"env": "PLAIN"}}).json()["result"]["env"] == "hello"
    listed = {v["name"]: v for v in client.env("vars")}
    assert listed["PLAIN"]["value"] == "hello"
    assert listed["TOKEN"] == {**listed["TOKEN"], "value": None, "secret": True}
    listing = server.cli("env", "list", "vars", check=True).stdout
    assert "(secret)" in listing
    assert secret not in listing
    for path in [server.log, *server.home.rglob("*")]:
        if path.is_file() and path.suffix != ".tar":
            assert secret.encode() not in path.read_bytes(), path

    for bad in ("1ABC", "A-B", "MODELHOST_X"):
        with pytest.raises(errors.BadRequest):
            client.set_env("vars", bad, "x")
    client.unset_env("vars", "PLAIN")
    wait_until(
        lambda: server.invoke("vars", {"data": {"env": "PLAIN"}}).json()["result"]["env"] is None
    )
    with pytest.raises(errors.NotFound):
        client.unset_env("vars", "PLAIN")


def test_request_logging_writes_input_output_status_and_duration(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="reqlog"
    )
    client.update_model("reqlog", log_requests=True)

    def logged() -> list[str]:
        server.invoke("reqlog", {"data": {"env": "marker-in"}})
        return [
            line["text"]
            for line in client.logs("reqlog", tail=1000)
            if "marker-in" in line["text"] and "status=200" in line["text"]
        ]

    line = wait_until(logged)[0]
    assert "duration_ms=" in line
    assert '"version":"1"' in line


def test_a_killed_instance_is_replaced_while_other_models_keep_serving(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="victim"
    )
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="bystander"
    )
    [victim] = client.instances("victim")
    pid = worker_pid(server, victim)  # on Ray: its process on the test cluster's node

    def replaced() -> bool:
        ready = [i for i in client.instances("victim") if i["state"] == "ready"]
        return [i["pid"] for i in ready] not in ([], [pid]) and victim.id not in {
            i["id"] for i in ready
        }

    with Load(f"{server.url}/models/bystander/latest/model", threads=2) as load:
        os.kill(pid, signal.SIGKILL)
        wait_until(replaced, timeout=30)
    assert load.failures() == []
    assert server.invoke("victim", {"data": {}}).status_code == 200


def test_an_infinite_loop_is_a_504_and_the_instance_is_replaced(
    server: Server, tmp_path: Path
) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="looper"
    )
    client.update_model("looper", timeout_seconds=1)
    response = httpx.post(
        f"{server.url}/models/looper/latest/model", json={"data": {"loop": True}}, timeout=30
    )
    assert response.status_code == 504
    wait_until(lambda: server.invoke("looper", {"data": {}}).status_code == 200, timeout=30)
    logs = "\n".join(line["text"] for line in client.logs("looper", tail=1000))
    assert "passed the timeout of" in logs


def test_an_instance_over_the_memory_limit_is_stopped_with_a_log_line_and_replaced(
    tmp_path: Path,
) -> None:
    env = {"MODELHOST_INSTANCE_MEMORY_LIMIT_MB": "150", "MODELHOST_SWITCH_HOLD_SECONDS": "0"}
    with running_server(tmp_path / "home", env) as server:
        client = server.client()
        client.publish(
            versioned_project(tmp_path, "1"), file="model.py", function="which", name="hog"
        )
        response = httpx.post(
            f"{server.url}/models/hog/latest/model", json={"data": {"hog_mb": 300}}, timeout=30
        )
        assert response.status_code == 502
        wait_until(lambda: server.invoke("hog", {"data": {}}).status_code == 200, timeout=30)
        logs = "\n".join(line["text"] for line in client.logs("hog", tail=1000))
        assert "over the limit of 150 MB (setting instance_memory_limit_mb)" in logs


def test_a_version_that_crashes_on_its_first_calls_loses_the_route_again(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "home", {"MODELHOST_SWITCH_HOLD_SECONDS": "20"}) as server:
        client = server.client()
        client.publish(
            versioned_project(tmp_path, "1"), file="model.py", function="which", name="fragile"
        )
        client.publish(
            versioned_project(tmp_path, "2"), file="model.py", function="which", name="fragile"
        )
        wait_until(lambda: _version(server, "fragile") == "2")
        crashed = server.invoke("fragile", {"data": {"crash": True}})
        # This input crashes every version: version 1, which answers what version 2 crashed
        # on during the hold, crashes on it too, and the caller gets the 502.
        assert crashed.status_code == 502
        wait_until(lambda: client.versions("fragile")[1]["status"] == "failed", timeout=30)
        assert _version(server, "fragile") == "1"
        fragile = client.version("fragile", 2)
        assert "Crashed on its first calls" in fragile["build_log"]
        assert fragile["failure"]["kind"] == "crash"
        assert fragile["failure"]["message"].startswith("Crashed on its first calls")


def test_a_failed_build_under_load_never_takes_a_call(server: Server, tmp_path: Path) -> None:
    client = server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="steady"
    )
    broken = versioned_project(tmp_path, "broken")
    (broken / "model.py").write_text("raise RuntimeError('bad release')\n")
    with (
        Load(f"{server.url}/models/steady/latest/model") as load,
        pytest.raises(errors.BuildFailed, match="bad release"),
    ):
        client.publish(broken, file="model.py", function="which", name="steady")
    assert load.failures() == []
    assert {c.version for c in load.calls} == {"1"}


def test_a_bad_configuration_change_never_takes_down_the_serving_instances(
    server: Server,
) -> None:
    client = server.client()
    client.publish(PROJECTS / "fussy", file="model.py", function="work", name="fussy")
    [instance] = [i["id"] for i in client.instances("fussy")]
    with Load(f"{server.url}/models/fussy/latest/model", threads=2) as load:
        client.set_env("fussy", "FUSSY_FAIL", "1")
        wait_until(lambda: client.versions("fussy")[0]["health"] == "unhealthy", timeout=60)
    assert load.failures() == []
    assert {c.instance for c in load.calls} == {instance}
    version = client.versions("fussy")[0]
    assert "FUSSY_FAIL is set" in version["health_log"]
    assert version["status"] == "running"
    client.unset_env("fussy", "FUSSY_FAIL")
    wait_until(lambda: client.versions("fussy")[0]["health"] == "ok", timeout=90)


def test_a_version_that_declares_concurrency_runs_calls_side_by_side(server: Server) -> None:
    client = server.client()
    version = client.publish(
        PROJECTS / "fussy", file="model.py", function="work", name="parallel", concurrency=4
    )
    assert version["concurrency"] == 4
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: server.invoke("parallel", {"data": {"delay": 1.0}}).json()["result"],
                range(4),
            )
        )
    assert len({a["instance"] for a in answers}) == 1
    assert max(a["peak"] for a in answers) == 4


def test_past_the_bounded_queue_calls_are_refused_at_once_with_retry_after(
    tmp_path: Path,
) -> None:
    settings = {"MODELHOST_MAX_QUEUED_REQUESTS": "2", "MODELHOST_PIPELINE_DEPTH": "2"}
    with running_server(tmp_path / "home", settings) as server:
        server.client().publish(PROJECTS / "fussy", file="model.py", function="work", name="narrow")
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(
                    lambda _: httpx.post(
                        f"{server.url}/models/narrow/latest/model",
                        json={"data": {"delay": 1.0}},
                        timeout=30,
                    ),
                    range(8),
                )
            )
        statuses = Counter(r.status_code for r in responses)
        assert statuses[200] == 4  # one running, one sent ahead (pipeline_depth 2), two queued
        assert statuses[503] == 4
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.json()["error"]["code"] == "queue_full"
        assert refused.headers["retry-after"] == "1"
        assert refused.elapsed.total_seconds() < 0.9
