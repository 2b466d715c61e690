"""The request log through a real server: a line for every call, exactly one, with one gateway
process and with two, never the body or the token; read by the API, the CLI and the UI."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

SECRET_INPUT = 424242.125  # a value only the bodies hold


@pytest.mark.parametrize("processes", [1, 2])
def test_every_call_has_exactly_one_line(
    tmp_path_factory: pytest.TempPathFactory, processes: int
) -> None:
    home = tmp_path_factory.mktemp(f"requests-{processes}") / "home"
    with running_server(home, {"MODELHOST_GATEWAY_PROCESSES": str(processes)}) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", file="calc.py", function="add", name="logged")
        client.update_model("logged", instance_count=2)
        client.set_access("logged", invocation="token")
        token = client.create_token("logged", "caller").token
        assert token is not None
        wait_until(lambda: [i["state"] for i in client.instances("logged")] == ["ready"] * 2, 60)
        made: dict[str, int] = {}  # request id -> status

        def call(body: object, route: str = "latest", auth: str | None = token) -> None:
            headers = {"Authorization": f"Bearer {auth}"} if auth else {}
            answer = httpx.post(
                f"{server.url}/models/logged/{route}/model", json=body, headers=headers, timeout=60
            )
            made[answer.headers["x-request-id"]] = answer.status_code

        for number in range(40):  # each on a fresh connection, spread over the processes
            call({"data": {"x": SECRET_INPUT, "y": number}})
        call({"data": {"x": "a", "y": 1}}, "versions/1")  # 500
        call({"data": {"z": 1}})  # 400
        call({"data": {"x": 1, "y": 1}}, auth=None)  # 401: no token
        call({"data": {"x": 1, "y": 1}}, "versions/7")  # 404: no such version
        assert Counter(made.values()) == {200: 40, 500: 1, 400: 1, 401: 1, 404: 1}

        def logged() -> list[dict[str, object]] | None:
            lines = client.requests("logged", tail=1000)
            return lines if len(lines) >= len(made) else None

        lines = wait_until(logged, timeout=15)  # written each second
        ids = Counter(str(line["request_id"]) for line in lines)
        assert ids == Counter(made.keys())  # every call, exactly once, and nothing else
        for line in lines:
            assert line["status"] == made[str(line["request_id"])]
            assert line["model"] == "logged"
            assert line["source"] == "127.0.0.1"
            assert str(line["time"]).endswith("Z")
        by_status = {line["status"]: line for line in lines}
        assert by_status[200]["route"] == "latest"
        assert by_status[200]["version"] == 1
        assert float(str(by_status[200]["duration_ms"])) > 0
        assert by_status[500]["route"] == "versions/1"
        assert by_status[404]["route"] == "versions/7"
        files = list((home / "logs").glob("*/requests.log"))
        assert len(files) == 1
        text = files[0].read_text()
        assert str(SECRET_INPUT) not in text  # never the body
        assert token not in text  # never the token

        printed = server.cli("logs", "logged", "--requests", "--tail", "5", check=True).stdout
        rows = printed.splitlines()
        assert len(rows) == 5
        assert rows[-1].split()[1] == lines[-1]["request_id"]


def test_the_request_log_rotates_at_its_size_and_keeps_its_backups(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("rotated") / "home"
    env = {"MODELHOST_REQUEST_LOG_MAX_BYTES": "2000", "MODELHOST_REQUEST_LOG_BACKUPS": "2"}
    with running_server(home, env) as server:
        client = server.client()
        client.publish(PROJECTS / "calc", file="calc.py", function="add", name="rotated")
        for number in range(60):  # about 180 bytes a line: several files' worth
            assert server.invoke("rotated", {"data": {"x": 1, "y": number}}).status_code == 200
        [directory] = (home / "logs").iterdir()

        def rotated() -> bool:
            return (directory / "requests.log.2").exists()

        wait_until(rotated, timeout=15)
        names = sorted(p.name for p in directory.glob("requests.log*"))
        assert names == ["requests.log", "requests.log.1", "requests.log.2"]
        for path in directory.glob("requests.log*"):
            assert path.stat().st_size <= 2000
        # The newest lines are still read, across the files.
        lines = client.requests("rotated", tail=5)
        assert len(lines) == 5
        assert lines == sorted(lines, key=lambda line: str(line["time"]))


def test_the_request_log_needs_view_logs_and_a_sane_tail(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="tail-checked")
    answer = httpx.get(
        f"{server.url}/api/v1/models/tail-checked/requests",
        params={"tail": 0},
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "tail must be between 1 and 10000 lines."
    assert httpx.get(f"{server.url}/api/v1/models/tail-checked/requests").status_code == 401
    failed = server.cli("logs", "tail-checked", "--requests", "--follow")
    assert failed.returncode == 2
    assert "--requests takes --tail only" in failed.stderr
