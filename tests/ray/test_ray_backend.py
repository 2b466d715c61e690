"""backend = ray on a real two-node Ray cluster: placement, spreading, R, switches and a lost
node, through a real ``modelhost serve`` and real HTTP calls.

The expected behaviour is the invocation contract (docs/api.md) and docs/scaling.md: instances
run on Ray nodes, a version's instances spread over the nodes, R instances only on nodes that
declare the R resource, and a lost node's calls in flight fail with a retryable 503 while its
instances come back on the nodes that remain.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from modelhost.backends.ray_node import node_home
from tests.helpers import PROJECTS, Server, loopback_ports, wait_until
from tests.ray.conftest import RayCluster
from tests.ui.conftest import session_cookies

pytestmark = pytest.mark.integration


def versioned_project(tmp_path: Path, tag: str) -> Path:
    project = tmp_path / f"versioned-{tag}"
    if not project.exists():
        shutil.copytree(PROJECTS / "versioned", project)
        (project / "version.txt").write_text(tag)
    return project


def ready_instances(server: Server, model: str) -> list:  # type: ignore[type-arg]
    return [i for i in server.client().instances(model) if i.state == "ready"]


class Load:
    """Threads calling one model non-stop until stopped; each has one call in flight."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.answers: list[tuple[float, int, dict]] = []  # type: ignore[type-arg]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                response = http.post(self.url, json={"data": {"delay": 0.05}})
                self.answers.append((started, response.status_code, response.json()))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        wait_until(lambda: len(self.answers) >= 3 * len(self._threads), timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def failures(self) -> list[tuple[float, int, dict]]:  # type: ignore[type-arg]
        return [a for a in self.answers if a[1] != 200]


def test_a_published_model_answers_from_an_instance_on_a_ray_node(
    ray_server: Server, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    version = ray_server.client().publish(PROJECTS / "calc" / "calc.py:add", name="ray-add")
    assert version["status"] == "running"
    response = ray_server.invoke("ray-add", {"data": {"x": 2, "y": 3}})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == 5
    (instance,) = ray_server.client().instances("ray-add")
    assert instance.node in {ray_cluster.head_id, ray_cluster.worker_id}
    assert instance.pid is None  # not a process on the server's machine
    shown = ray_server.cli("instances", "ray-add", check=True).stdout
    assert instance.node in shown
    page = httpx.get(
        f"{ray_server.url}/ui/models/ray-add/instances",
        cookies=session_cookies(ray_server.home, ray_server.api_key),
    )
    assert page.status_code == 200
    assert f'title="Ray node {instance.node}"' in page.text


def test_a_call_error_keeps_the_invocation_contract_on_ray(ray_server: Server) -> None:
    ray_server.client().publish(PROJECTS / "calc" / "calc.py:add", name="ray-contract")
    wrong = ray_server.invoke("ray-contract", {"data": {"x": 1}})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "invalid_arguments"
    raised = ray_server.invoke("ray-contract", {"data": {"x": 1, "y": "a"}})
    assert raised.status_code == 500
    assert "TypeError" in raised.json()["error"]["message"]


def test_an_infinite_loop_is_a_504_and_the_instance_is_replaced_on_ray(
    ray_server: Server, tmp_path: Path
) -> None:
    client = ray_server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="ray-loop"
    )
    client.update_model("ray-loop", timeout_seconds=1)
    (first,) = client.instances("ray-loop")
    response = ray_server.invoke("ray-loop", {"data": {"loop": True}})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "model_timeout"
    wait_until(lambda: ray_server.invoke("ray-loop", {"data": {}}).status_code == 200, timeout=60)
    assert first.id not in {i.id for i in ready_instances(ray_server, "ray-loop")}
    logs = "\n".join(line["text"] for line in client.logs("ray-loop", tail=1000))
    assert "passed the timeout of" in logs


def test_a_crash_during_a_call_is_a_502_not_a_lost_node_and_the_instance_is_replaced(
    ray_server: Server, tmp_path: Path
) -> None:
    client = ray_server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="ray-crash"
    )
    response = ray_server.invoke("ray-crash", {"data": {"crash": True}})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "instance_crashed"
    wait_until(lambda: ray_server.invoke("ray-crash", {"data": {}}).status_code == 200, timeout=60)

    def logs() -> str:
        return "\n".join(line["text"] for line in client.logs("ray-crash", tail=1000))

    # the old instance's log ends with how it ended (the log API reads the files as they are)
    try:
        wait_until(lambda: "exited with code 9" in logs(), timeout=30)
    except AssertionError:
        raise AssertionError(f"no exit line in the log:\n{logs()}") from None


def test_a_models_variables_reach_its_instances_and_no_other_models(
    ray_server: Server, tmp_path: Path
) -> None:
    client = ray_server.client()
    for name in ("ray-vars", "ray-novars"):
        client.publish(
            versioned_project(tmp_path, "1"), file="model.py", function="which", name=name
        )
    client.set_env("ray-vars", "RAY_SECRET", "s3cr3t", secret=True)
    wait_until(
        lambda: (
            ray_server.invoke("ray-vars", {"data": {"env": "RAY_SECRET"}}).json()["result"]["env"]
            == "s3cr3t"
        ),
        timeout=60,
    )
    other = ray_server.invoke("ray-novars", {"data": {"env": "RAY_SECRET"}})
    assert other.json()["result"]["env"] is None


def test_a_model_on_a_tier_asks_ray_for_exactly_its_cpus_and_memory(
    ray_server: Server, tmp_path: Path
) -> None:
    client = ray_server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="ray-tier"
    )
    (before,) = client.instances("ray-tier")
    updated = client.update_model("ray-tier", tier="ray-small")
    assert updated["tier"] == {"name": "ray-small", "cpus": 1.0, "memory_mb": 100, "gpus": 0}
    wait_until(
        lambda: [i.id for i in ready_instances(ray_server, "ray-tier")] not in ([], [before.id]),
        timeout=60,
    )
    (after,) = ready_instances(ray_server, "ray-tier")
    logs = "\n".join(line["text"] for line in client.logs("ray-tier", tail=1000))
    client.stop("ray-tier")  # its CPU goes back to the cluster for the tests after it
    assert (
        f"instance {after.id} placed on Ray node {after.node}, with 1 CPU, 100 MB of memory" in logs
    )


def test_a_tier_no_node_can_take_waits_pending_and_starts_when_a_node_that_fits_joins(
    ray_server: Server, ray_cluster: RayCluster
) -> None:
    client = ray_server.client()
    created = httpx.post(
        f"{ray_server.url}/api/v1/models",
        json={"name": "ray-gpu-model"},
        headers={"Authorization": f"Bearer {ray_server.api_key}"},
    )
    assert created.status_code == 201, created.text
    # on Ray a GPU tier is allowed (a GPU node may join); this cluster has none yet
    client.update_model("ray-gpu-model", tier="ray-gpu")
    client.publish(PROJECTS / "calc" / "calc.py:add", name="ray-gpu-model", wait=False)
    pending = wait_until(
        lambda: (
            (found := client.instances("ray-gpu-model"))
            and found[0].state == "pending"
            and found[0]
        ),
        timeout=60,
    )
    # docs/scaling.md, "Hardware tiers": what it waits for, and that no node has it
    assert pending.message is not None
    assert pending.message.startswith(
        "waiting for a Ray node with 0.1 CPU, 100 MB of memory, 1 GPU: "
        "no node in the cluster has that."
    )
    assert pending.node is None
    shown = ray_server.cli("instances", "ray-gpu-model", check=True).stdout
    row = next(line.split() for line in shown.splitlines() if line.startswith(pending.id + " "))
    assert row[:5] == [pending.id, "1", "pending", "no", "-"]
    assert f"{pending.id}: {pending.message}" in shown
    page = httpx.get(
        f"{ray_server.url}/ui/models/ray-gpu-model/instances",
        cookies=session_cookies(ray_server.home, ray_server.api_key),
    )
    assert "no node in the cluster has that" in page.text
    gpu_node = ray_cluster.cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        (ready,) = wait_until(lambda: ready_instances(ray_server, "ray-gpu-model"), timeout=90)
        # the same instance, placed once a node had what it asks for: not failed, not retried
        assert ready.id == pending.id
        assert ready.node == gpu_node.node_id
        assert ready.message is None
        answer = ray_server.invoke("ray-gpu-model", {"data": {"x": 2, "y": 3}})
        assert answer.status_code == 200, answer.text
        assert client.version("ray-gpu-model", 1)["status"] == "running"
    finally:
        client.stop("ray-gpu-model")
        wait_until(lambda: client.instances("ray-gpu-model") == [], timeout=60)
        ray_cluster.cluster.remove_node(gpu_node)


def test_a_pending_instance_says_whether_no_node_has_what_it_asks_for_or_they_are_busy() -> None:
    from modelhost.backends.ray import fits

    gpu = {"Alive": True, "Resources": {"CPU": 1.0, "GPU": 1.0, "memory": 2e9}}
    small = {"Alive": True, "Resources": {"CPU": 4.0, "memory": 8e9}}
    gone = {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 2.0, "memory": 8e9}}
    assert fits({"CPU": 1.0, "GPU": 1.0}, [small, gpu])
    assert not fits({"CPU": 2.0, "GPU": 1.0}, [small, gpu])
    assert not fits({"CPU": 1.0, "GPU": 1.0}, [small, gone])
    assert fits({"CPU": 0.1, "memory": 4e9}, [gpu, small])


def test_scaling_to_two_puts_the_instances_on_different_nodes(
    ray_server: Server, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    client = ray_server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="ray-spread"
    )
    client.scale("ray-spread", 2)
    ready = wait_until(
        lambda: (
            len(ready_instances(ray_server, "ray-spread")) == 2
            and ready_instances(ray_server, "ray-spread")
        ),
        timeout=90,
    )
    assert {i.node for i in ready} == {ray_cluster.head_id, ray_cluster.worker_id}
    with ThreadPoolExecutor(4) as pool:  # calls at once: both instances get some
        answers = list(
            pool.map(lambda _: ray_server.invoke("ray-spread", {"data": {"delay": 0.3}}), range(8))
        )
    answered = {a.json()["result"]["instance"] for a in answers}
    assert answered == {i.id for i in ready}


def test_an_r_model_runs_on_the_node_that_declares_r(
    ray_server: Server, ray_cluster: RayCluster
) -> None:
    ray_server.client().publish(PROJECTS / "r_kitchen" / "kitchen.R:kitchen", name="ray-r")
    response = ray_server.invoke("ray-r", {"data": {"case": "read"}})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == ["kitchen data"] or response.json()["result"]
    (instance,) = ray_server.client().instances("ray-r")
    assert instance.node == ray_cluster.head_id  # only the head declares the R resource


def _node_instance_ports() -> set[int]:
    """The loopback TCP ports the node actors of this machine's cluster listen on."""
    actors = set()
    for name in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if name.isdigit() and b"NodeInstance" in Path(f"/proc/{name}/cmdline").read_bytes():
                actors.add(int(name))
    return loopback_ports(actors)


def test_a_stranger_connecting_first_to_an_r_worker_s_port_on_a_node_is_turned_away(
    ray_server: Server,
) -> None:
    # The R worker connects to a loopback port of its node actor, where any process of the
    # node can connect first; only the worker knows the nonce its first frame carries.
    client = ray_server.client()
    before = _node_instance_ports()
    version = client.publish(PROJECTS / "r_gated" / "gated.R:double", name="ray-gated", wait=False)
    # the R worker's (it waits for the gate to load); the servers' is on the node's address
    ports = wait_until(lambda: _node_instance_ports() - before, timeout=30)
    strangers = []
    for port in ports:
        impostor = socket.create_connection(("127.0.0.1", port))
        ready = json.dumps({"pid": 1, "signature": "double(x)", "nonce": "not-it"}).encode()
        impostor.sendall(struct.pack(">IB", len(ready), 1) + ready)  # a READY frame
        strangers += [impostor, socket.create_connection(("127.0.0.1", port))]  # and a silent one
    gate = node_home() / "work" / version["id"] / "gate"
    wait_until(gate.parent.is_dir, timeout=30)
    gate.touch()
    wait_until(lambda: client.version("ray-gated", 1)["status"] == "running", timeout=120)
    answer = ray_server.invoke("ray-gated", {"data": {"x": 21}})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == 42
    assert strangers[0].recv(1) == b""  # the impostor was closed on
    logs = ray_server.home / "logs"
    wait_until(lambda: any("turned away" in p.read_text() for p in logs.rglob("*.log")), timeout=30)
    for stranger in strangers:
        stranger.close()


def test_an_isolated_environment_is_built_on_the_node_from_the_versions_lock(
    ray_server: Server, tmp_path: Path
) -> None:
    project = tmp_path / "isolated"
    project.mkdir()
    (project / "requirements.txt").write_text("six==1.16.0\n")
    (project / "model.py").write_text(
        "import sys\n\nimport six\n\n\n"
        "def versions():\n    return {'six': six.__version__, 'prefix': sys.prefix}\n"
    )
    version = ray_server.client().publish(project / "model.py:versions", name="ray-isolated")
    assert version["status"] == "running"
    response = ray_server.invoke("ray-isolated", {"parameters": []})
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["six"] == "1.16.0"
    # built again on the node, in its own data directory, under the same cache key
    key = Path(result["prefix"]).name
    assert (ray_server.home / "envs" / key).is_dir()
    assert not result["prefix"].startswith(str(ray_server.home))


def test_the_model_log_shows_what_the_worker_wrote_on_its_node(ray_server: Server) -> None:
    ray_server.client().publish(PROJECTS / "r_kitchen" / "kitchen.R:kitchen", name="ray-logs")
    assert (
        ray_server.invoke("ray-logs", {"data": {"case": "print", "arg": "hello"}}).status_code
        == 200
    )
    wait_until(
        lambda: any(
            "kitchen says hello" in line["text"] for line in ray_server.client().logs("ray-logs")
        ),
        timeout=30,
    )


def test_publishing_a_new_version_under_load_fails_no_call(
    ray_server: Server, tmp_path: Path
) -> None:
    client = ray_server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="ray-switch"
    )
    with Load(f"{ray_server.url}/models/ray-switch/latest/model") as load:
        client.publish(
            versioned_project(tmp_path, "2"), file="model.py", function="which", name="ray-switch"
        )
        switched = time.monotonic()
        wait_until(
            lambda: (
                sum(
                    1
                    for a in load.answers
                    if a[0] > switched and a[1] == 200 and a[2]["result"]["version"] == "2"
                )
                >= 10
            ),
            timeout=60,
        )
    assert load.failures() == []
    assert {a[2]["result"]["version"] for a in load.answers} == {"1", "2"}


def test_losing_a_node_under_load_fails_only_calls_in_flight_and_its_instances_come_back(
    ray_server: Server, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    client = ray_server.client()
    client.publish(
        versioned_project(tmp_path, "1"), file="model.py", function="which", name="ray-lost"
    )
    client.scale("ray-lost", 2)
    wait_until(
        lambda: (
            {i.node for i in ready_instances(ray_server, "ray-lost")}
            == {ray_cluster.head_id, ray_cluster.worker_id}
        ),
        timeout=90,
    )
    threads = 3
    try:
        with Load(f"{ray_server.url}/models/ray-lost/latest/model", threads) as load:
            killed = time.monotonic()
            ray_cluster.kill_worker()
            back = wait_until(
                lambda: (
                    ready := ready_instances(ray_server, "ray-lost"),
                    len(ready) == 2 and {i.node for i in ready} == {ray_cluster.head_id},
                )[1],
                timeout=120,
            )
            assert back
            recovered = time.monotonic()
            wait_until(lambda: sum(1 for a in load.answers if a[0] > recovered) >= 20, timeout=60)
    finally:
        ray_cluster.add_worker()
    failures = load.failures()
    # at most the calls in flight on the lost node (each thread has one call in flight)
    assert len(failures) <= threads, failures
    for _, status, body in failures:
        assert status == 503, body
        assert body["error"]["code"] == "instance_lost", body
    assert all(a[1] == 200 for a in load.answers if a[0] > recovered)
    assert any(a[1] == 200 for a in load.answers if a[0] > killed)
