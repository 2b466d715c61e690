"""Several gateway processes (``gateway_processes`` 2): each ready instance is handed to one
process, both processes answer calls on the server's one port, and everything else still works
through either of them. Every request here opens a fresh connection, so the kernel spreads the
requests over the processes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelhost import Client
from tests.helpers import PROJECTS, Server, running_server, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("gateway-processes") / "home"
    with running_server(home, {"MODELHOST_GATEWAY_PROCESSES": "2"}) as running:
        yield running


def _post(server: Server, name: str, data: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}/models/{name}/latest/model", json={"data": data}, timeout=60)


def _ready(server: Server, name: str, count: int) -> list[dict[str, object]]:
    def ready() -> bool:
        instances = server.client().instances(name)
        return [i["state"] for i in instances] == ["ready"] * count

    wait_until(ready, timeout=60)
    return server.client().instances(name)


def _publish(server: Server, name: str, *, instances: int, timeout: float = 30) -> list[str]:
    """Publish the ``fussy`` fixture (it answers with its instance id); the ids of its
    instances."""
    client = server.client()
    client.publish(PROJECTS / "fussy", file="model.py", function="work", name=name)
    client.update_model(name, instance_count=instances, timeout_seconds=timeout)
    wait_until(lambda: _post(server, name, {}).status_code == 200, timeout=60)
    return [str(i["id"]) for i in _ready(server, name, instances)]


def _gateway_pids(server: Server) -> set[int]:
    assert server.process is not None
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == server.serving_pid and b"modelhost.gateway.process_child" in cmdline:
            found.add(int(entry))
    return found


def test_a_version_s_instances_are_spread_over_the_processes_and_each_answers_calls(
    server: Server,
) -> None:
    ids = _publish(server, "spread", instances=2)
    holders = {i["gateway"] for i in server.client().instances("spread")}
    assert holders == {0, 1}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(server, "spread", {}), range(64)))
    assert [a.status_code for a in answers] == [200] * 64
    # The main process no longer reads the instance it handed over: answers from both instances
    # mean the gateway process sent calls to its instance itself.
    assert {a.json()["result"]["instance"] for a in answers} == set(ids)


def test_calls_answered_by_every_process_are_counted_in_the_metrics(server: Server) -> None:
    _publish(server, "counted", instances=2)
    client = server.client()

    def requests() -> int:
        versions = client.metrics("counted")["versions"]  # none until a first count arrives
        return int(versions[0]["totals"]["requests"]) if versions else 0

    # The calls _publish made may still be on their way from a gateway process (they report
    # each second), so they can only add to what is counted after this: at least 40 more.
    before = requests()
    with ThreadPoolExecutor(8) as pool:
        statuses = [
            r.status_code for r in pool.map(lambda _: _post(server, "counted", {}), range(40))
        ]
    assert statuses == [200] * 40
    # Gateway processes send their counts each second.
    wait_until(lambda: requests() >= before + 40, timeout=10)


def test_a_model_with_one_instance_answers_through_every_process(server: Server) -> None:
    [only] = _publish(server, "single", instances=1)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(server, "single", {}), range(32)))
    assert [a.status_code for a in answers] == [200] * 32
    assert {a.json()["result"]["instance"] for a in answers} == {only}


def test_api_calls_through_any_process_work_and_keep_the_callers_address(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="audited")
    headers = {"Authorization": f"Bearer {server.api_key}"}
    for number in range(12):
        made = httpx.post(
            f"{server.url}/api/v1/models/audited/tokens",
            json={"name": f"caller-{number}"},
            headers=headers,
        )
        assert made.status_code == 201, made.text
    events = [e for e in client.audit("audited") if e["action"] == "token-create"]
    assert len(events) == 12
    assert {e["source_ip"] for e in events} == {"127.0.0.1"}
    # Uploads too: each client is a new connection, taken by either process.
    for _ in range(6):
        with Client(server.url, server.api_key) as fresh:
            fresh.publish(PROJECTS / "calc", file="calc.py", function="add", name="audited")
    assert [v["number"] for v in client.versions("audited")][-1] == 7


def test_a_web_session_stays_with_its_own_browser_whichever_process_passes_it_on(
    server: Server,
) -> None:
    # Sign in from several browsers (each a new connection, so some go through the gateway
    # process), then ask for a page from browsers that never signed in: none may be let in.
    for _ in range(6):
        with httpx.Client(base_url=server.url) as browser:
            browser.get("/ui/sign-in")
            signed_in = browser.post(
                "/ui/sign-in",
                data={"api_key": server.api_key, "csrf_token": browser.cookies["mh_csrf"]},
            )
            assert signed_in.status_code == 303
            assert browser.get("/ui/models").status_code == 200
    for _ in range(12):
        with httpx.Client(base_url=server.url) as stranger:
            page = stranger.get("/ui/models")
            assert page.status_code == 303
            assert page.headers["location"].startswith("/ui/sign-in")


def test_refused_tokens_are_refused_and_audited_whichever_process_took_the_call(
    server: Server,
) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc", file="calc.py", function="add", name="guarded")
    client.update_model("guarded", instance_count=2)
    client.set_access("guarded", invocation="token")
    token = client.create_token("guarded", "ok")["token"]
    url = f"{server.url}/models/guarded/latest/model"
    body = {"data": {"x": 1, "y": 2}}
    wait_until(lambda: httpx.post(url, json=body, auth=(token, token)).status_code == 200)
    for _ in range(6):
        assert httpx.post(url, json=body, auth=(token, token)).status_code == 200
        assert httpx.post(url, json=body, auth=("wrong", "wrong")).status_code == 401
    wait_until(
        lambda: any(
            e["action"] == "invoke" and e["outcome"] == "denied" and e["source_ip"] == "127.0.0.1"
            for e in client.audit("guarded")
        ),
        timeout=10,
    )


def _connection_to_gateway_process(server: Server, name: str, instance: str) -> httpx.Client:
    """A keep-alive connection that the gateway process holding ``instance`` took."""
    for _ in range(60):
        connection = httpx.Client(base_url=server.url, timeout=60)
        answer = connection.post(f"/models/{name}/latest/model", json={"data": {}})
        if answer.json()["result"]["instance"] == instance:
            return connection
        connection.close()
    raise AssertionError("no connection reached the gateway process")


def test_a_call_that_times_out_in_a_gateway_process_answers_504_and_its_instance_is_replaced(
    server: Server,
) -> None:
    _publish(server, "stuck", instances=2, timeout=1.5)
    [held] = [i for i in server.client().instances("stuck") if i["gateway"] == 1]
    connection = _connection_to_gateway_process(server, "stuck", held["id"])
    try:
        stuck = connection.post("/models/stuck/latest/model", json={"data": {"delay": 30}})
    finally:
        connection.close()
    assert stuck.status_code == 504
    assert stuck.json()["error"]["code"] == "model_timeout"
    # The gateway process asked the main one to end it; a replacement takes its place.
    wait_until(lambda: held["id"] not in {i["id"] for i in _ready(server, "stuck", 2)}, timeout=30)
    log = server.client().logs("stuck")
    assert any("passed the timeout" in line["text"] for line in log)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _post(server, "stuck", {}), range(16)))
    assert [a.status_code for a in answers] == [200] * 16


def test_publishing_a_new_version_under_traffic_fails_no_call(server: Server) -> None:
    client = server.client()
    _publish(server, "switching", instances=2)
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            statuses.append(_post(server, "switching", {"delay": 0.05}).status_code)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        client.publish(PROJECTS / "fussy", file="model.py", function="work", name="switching")
        wait_until(
            lambda: _post(server, "switching", {}).json()["release"]["model_version_number"] == 2,
            timeout=60,
        )
        # Past the switch hold: version 1's instances are released by the gateway process
        # and stopped, while the calls go on.
        wait_until(lambda: {i["version"] for i in client.instances("switching")} == {2}, timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(statuses) > 20
    assert set(statuses) == {200}


def test_a_gateway_process_that_dies_is_started_again_and_its_instances_replaced(
    server: Server,
) -> None:
    _publish(server, "survivor", instances=2)
    [gateway] = _gateway_pids(server)
    held = {i["id"] for i in server.client().instances("survivor") if i["gateway"] == 1}
    assert held
    os.kill(gateway, signal.SIGKILL)
    wait_until(lambda: len(_gateway_pids(server) - {gateway}) == 1, timeout=20)
    wait_until(
        lambda: (
            {i["gateway"] for i in _ready(server, "survivor", 2)} == {0, 1}
            and not held & {i["id"] for i in server.client().instances("survivor")}
        ),
        timeout=30,
    )
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(server, "survivor", {}), range(32)))
    assert [a.status_code for a in answers] == [200] * 32


def test_stopping_the_server_stops_its_gateway_processes(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", {"MODELHOST_GATEWAY_PROCESSES": "3"}) as running:
        gateways = _gateway_pids(running)
        assert len(gateways) == 2
    for pid in gateways:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )


def test_the_tester_reaches_an_idle_instance_a_gateway_process_holds(server: Server) -> None:
    _publish(server, "tester-spread", instances=2)
    client = server.client()
    client.set_access("tester-spread", invocation="token")
    held_by = {str(i["id"]): i["gateway"] for i in client.instances("tester-spread")}
    assert sorted(held_by.values()) == [0, 1]
    answers: list[dict[str, object]] = []

    def test_call() -> None:
        with Client(server.url, server.api_key) as own:
            try:
                answers.append(
                    own.predict("tester-spread", data={"delay": 2}, as_tester=True).result
                )
            except Exception as exc:  # the assertion below shows it
                answers.append({"error": repr(exc)})

    first = threading.Thread(target=test_call)
    first.start()
    # The tester's calls are made by the main process, whose own instance is now busy ...
    wait_until(lambda: any(i["busy"] for i in client.instances("tester-spread")))
    second = threading.Thread(target=test_call)
    second.start()
    first.join(60)
    second.join(60)
    # ... so the second one went to the idle instance of the gateway process, without a token.
    assert len(answers) == 2
    assert {held_by.get(str(a.get("instance"))) for a in answers} == {0, 1}, answers


def _socket_inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(int(target[len("socket:[") : -1]))
    return found


def _server_side_inode(client_port: int, server_port: int) -> int:
    """The inode of the server's end of the TCP connection from ``client_port`` (/proc/net)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return int(fields[9])
    raise AssertionError(f"no server-side socket for the connection from port {client_port}")


def _holding_process(server: Server, connection: httpx.Client, name: str) -> int:
    """Make a call on ``connection`` and say which process holds the connection's server end:
    0 the main one, 1 the gateway process."""
    answer = connection.post(f"/models/{name}/latest/model", json={"data": {}})
    assert answer.status_code == 200
    stream = answer.extensions["network_stream"]
    client_port = stream.get_extra_info("client_addr")[1]
    inode = _server_side_inode(client_port, int(server.url.rsplit(":", 1)[1]))
    [gateway] = _gateway_pids(server)
    holders = [
        index
        for index, pid in ((0, server.serving_pid), (1, gateway))
        if inode in _socket_inodes(pid)
    ]
    assert len(holders) == 1, holders
    return holders[0]


def test_a_connection_whose_first_call_goes_to_another_process_s_instance_moves_there(
    server: Server,
) -> None:
    [only] = _publish(server, "steered", instances=1)
    [instance] = server.client().instances("steered")
    holder = instance["gateway"]
    seen = set()
    # Fresh connections land on either process (the kernel spreads them); each is moved, on
    # its first call, to the process holding the model's one instance, and stays there.
    for _ in range(12):
        with httpx.Client(base_url=server.url, timeout=30) as connection:
            first = _holding_process(server, connection, "steered")
            assert first == holder
            assert _holding_process(server, connection, "steered") == holder
            answer = connection.post("/models/steered/latest/model", json={"data": {}})
            assert answer.json()["result"]["instance"] == only
            seen.add(first)
    assert seen == {holder}


def test_a_batching_version_s_instances_are_all_held_by_one_process(server: Server) -> None:
    client = server.client()
    client.publish(f"{PROJECTS / 'batching'}/batching.py:total", name="batched", batch_max_size=8)
    client.update_model("batched", instance_count=2)
    _ready(server, "batched", 2)
    # one queue for all its calls, so they leave in the largest batches
    assert len({i["gateway"] for i in client.instances("batched")}) == 1
    assert server.invoke("batched", {"parameters": [2, 3]}).json()["result"]["sum"] == 5
