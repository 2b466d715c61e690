"""The core flow through a real server: publish a project, call the function over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modelhost import __version__, errors
from tests.helpers import PROJECTS, RAY_NODE_HOME, Server, wait_until

pytestmark = pytest.mark.integration


def test_wine_example_answers_the_readme_curl_with_an_integer_quality(
    server: Server, wine_project: Path
) -> None:
    client = server.client()
    version = client.publish(f"{wine_project}/predict.py:predict", name="wine-quality")
    assert version["status"] == "running"
    assert version["number"] == 1

    curl = subprocess.run(
        [
            "curl",
            "-s",
            "-i",
            "-X",
            "POST",
            f"{server.url}/models/wine-quality/latest/model",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"parameters": [[5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]]}',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    head, _, body = curl.stdout.partition("\n\n")  # text mode turned \r\n into \n
    assert head.startswith("HTTP/1.1 200")
    answer = json.loads(body)
    assert isinstance(answer["result"], int)
    assert 3 <= answer["result"] <= 8
    assert len(answer["request_id"]) == 16
    assert answer["timing"] > 0
    assert isinstance(answer["model_time_in_ms"], int)
    model = client.model("wine-quality")
    assert answer["release"] == {
        "harness_version": __version__,
        "model_id": model["id"],
        "model_version": version["id"],
        "model_version_number": 1,
    }
    headers = dict(line.split(": ", 1) for line in head.splitlines()[1:])
    assert headers["x-request-id"] == answer["request_id"]
    assert headers["x-model-version"] == "1"


def test_a_model_is_callable_by_id_and_by_name(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="calc-by-id")
    model_id = client.model("calc-by-id")["id"]
    by_name = server.invoke("calc-by-id", {"data": {"x": 1, "y": 2}})
    by_id = server.invoke(model_id, {"parameters": [3, 4]})
    assert by_name.json()["result"] == 3
    assert by_id.json()["result"] == 7
    assert client.predict(model_id, data={"x": "a", "y": "b"}).result == "ab"


def test_module_level_code_runs_once_per_instance_and_calls_reuse_it(server: Server) -> None:
    client = server.client()
    # fork off: each instance imports the script itself (with fork on, see below)
    client.publish(PROJECTS / "once", file="once.py", function="count", name="once", fork=False)
    answers = [client.predict("once", parameters=[]).result for _ in range(5)]
    assert [a["calls"] for a in answers] == [1, 2, 3, 4, 5]
    assert {a["instance"] for a in answers} == {answers[0]["instance"]}
    assert answers[-1]["imports"] == [answers[0]["instance"]]

    client.update_model("once", instance_count=2)
    wait_until(lambda: [i["state"] for i in client.instances("once")] == ["ready", "ready"])
    instances = {i["id"] for i in client.instances("once")}
    assert len(instances) == 2
    imported = [
        line["instance"] for line in client.logs("once") if line["text"] == "module imported"
    ]
    assert sorted(imported) == sorted(instances)  # once in each instance, no more


def test_module_level_code_runs_once_for_all_the_instances_forked_from_it(
    server: Server,
) -> None:
    client = server.client()
    client.publish(PROJECTS / "once", file="once.py", function="count", name="once-forked")
    first = client.predict("once-forked", parameters=[]).result["instance"]
    client.update_model("once-forked", instance_count=2)
    wait_until(lambda: [i["state"] for i in client.instances("once-forked")] == ["ready"] * 2)
    instances = client.instances("once-forked")
    imported = [
        line["instance"] for line in client.logs("once-forked") if line["text"] == "module imported"
    ]
    if server.on_ray:
        # No fork servers on Ray (docs/scaling.md): each instance starts fresh and imports
        # the script itself, once.
        assert [i["forked"] for i in instances] == [False, False]
        assert sorted(imported) == sorted(i["id"] for i in instances)
        assert first in imported
        return
    assert all(i["forked"] for i in instances)
    assert imported == [first]  # by the fork server, in the first instance's log, once


def test_the_working_directory_is_the_projects_copy_so_relative_paths_work(
    server: Server,
) -> None:
    client = server.client()
    version = client.publish(
        PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="cwd"
    )
    assert client.predict("cwd", data={"case": "read"}).result == "forty-two"
    cwd = client.predict("cwd", data={"case": "cwd"}).result
    if server.on_ray:  # the version's working copy on the instance's node (here, this machine)
        assert Path(cwd) == RAY_NODE_HOME / "work" / version["id"]
    else:
        assert Path(cwd).is_relative_to(server.home)
    assert (Path(cwd) / "kitchen.py").is_file()


def test_instances_see_only_their_own_environment_not_the_servers(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="env")
    seen = client.predict(
        "env", data={"case": "env", "arg": ["MODELHOST_HOME", "MODELHOST_MODEL_NAME", "PATH"]}
    ).result
    assert seen["MODELHOST_HOME"] is None
    assert seen["MODELHOST_MODEL_NAME"] == "env"
    assert seen["PATH"]


def test_each_publish_makes_the_next_version_and_latest_moves_to_it(server: Server) -> None:
    client = server.client()
    first = client.publish(
        PROJECTS / "good",
        file="predict.py",
        function="predict",
        name="versions",
        description="first",
    )
    second = client.publish(
        PROJECTS / "calc", file="calc.py", function="add", name="versions", description="second"
    )
    assert (first["number"], second["number"]) == (1, 2)
    answer = client.predict("versions", data={"x": 2, "y": 3})
    assert answer.result == 5
    assert answer.version == 2
    listed = client.versions("versions")
    assert [v["number"] for v in listed] == [1, 2]
    assert [v["description"] for v in listed] == ["first", "second"]
    assert listed[1]["status"] == "running"
    assert listed[1]["entry_point"] == "calc.py:add"
    assert listed[1]["author"] == "admin"
    assert len(listed[1]["bundle_sha256"]) == 64
    wait_until(lambda: client.versions("versions")[0]["status"] == "ready")


def test_identical_projects_share_one_content_addressed_bundle(server: Server) -> None:
    client = server.client()
    a = client.publish(PROJECTS / "calc", file="calc.py", function="add", name="same-a")
    b = client.publish(PROJECTS / "calc", file="calc.py", function="add", name="same-b")
    assert a["bundle_sha256"] == b["bundle_sha256"]
    assert (server.home / "bundles" / f"{a['bundle_sha256']}.tar").is_file()


def test_instance_output_reaches_the_model_log(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="logs")
    client.predict("logs", data={"case": "print", "arg": "hello-log"})

    def logged() -> list[dict]:
        return [line for line in client.logs("logs") if "hello-log" in line["text"]]

    lines = wait_until(logged)
    assert {line["stream"] for line in lines} == {"stdout", "stderr"}
    assert all(line["version"] == 1 for line in lines)
    assert any("kitchen loaded" in line["text"] for line in client.logs("logs"))


def test_a_failed_build_never_replaces_the_running_version(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "good", file="predict.py", function="predict", name="keeps")
    with pytest.raises(errors.BuildFailed):
        client.publish(
            PROJECTS / "import_error", file="predict.py", function="predict", name="keeps"
        )
    answer = client.predict("keeps", data={"x": 4})
    assert answer.result == {"doubled": 8}
    assert answer.version == 1
    assert [v["status"] for v in client.versions("keeps")] == ["running", "failed"]


def test_following_a_log_returns_only_lines_written_after_the_last_one_seen(
    server: Server,
) -> None:
    client = server.client()
    client.publish(PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="follow")
    client.predict("follow", data={"case": "print", "arg": "first"})
    seen = wait_until(lambda: [x for x in client.logs("follow") if "first" in x["text"]])
    last = max(line["time"] for line in client.logs("follow"))
    client.predict("follow", data={"case": "print", "arg": "second"})
    later = wait_until(lambda: client.logs("follow", after=last))
    assert all(line["time"] > last for line in later)
    assert not any("first" in line["text"] for line in later)
    assert seen


def test_logs_follow_on_the_command_line_prints_new_lines(server: Server) -> None:
    client = server.client()
    # Without a fork server, the script is imported once, so its log says "kitchen loaded" once
    # (kitchen starts a thread at import: a fork server would import it, then start fresh).
    client.publish(
        PROJECTS / "kitchen", file="kitchen.py", function="kitchen", name="tail-f", fork=False
    )
    env = {k: v for k, v in server.env.items() if k != "MODELHOST_PORT"}
    follower = subprocess.Popen(
        [sys.executable, "-m", "modelhost", "logs", "tail-f", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert follower.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or ()), daemon=True)
    reader.start()
    try:
        # It prints what the log holds so far, then follows it.
        wait_until(lambda: any("kitchen loaded" in line for line in lines), timeout=30)
        client.predict("tail-f", data={"case": "print", "arg": "live-line"})
        wait_until(lambda: any("kitchen says live-line" in line for line in lines), timeout=30)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
        follower.stdout.close()
    assert sum("kitchen loaded" in line for line in lines) == 1


def test_a_publish_the_server_would_refuse_fails_before_the_project_is_packed(
    server: Server, tmp_path: Path
) -> None:
    # A project with a large file: what the server refuses must not wait for packing it.
    project = tmp_path / "big"
    project.mkdir()
    (project / "calc.py").write_text((PROJECTS / "calc" / "calc.py").read_text())
    (project / "weights.bin").write_bytes(os.urandom(1 << 20))
    said: list[str] = []
    with pytest.raises(errors.BadRequest, match="'Not One!' is not an environment"):
        server.client().publish(
            project,
            name="never-packed",
            file="calc.py",
            function="add",
            environment="Not One!",  # the server knows the environments, not the client
            on_progress=said.append,
        )
    assert not [line for line in said if line.startswith(("Packing", "Uploading"))], said
    with pytest.raises(errors.ModelNotFound):
        server.client().model("never-packed")
