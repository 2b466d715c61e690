"""A killed serving process is survived (issue 15: 2.5 s of refused connections, an orphan at
100 % CPU and three processes for one version after kill -9): the arbiter keeps the port and
starts the serving process again, connections wait in the backlog meanwhile, a client that
retries once loses no call, and nothing of the dead process is left running."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration


class RetryingLoad:
    """Threads calling a model non-stop, each call retried once on any failure, as a client
    with a retry policy would."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.ok = 0
        self.lost: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                outcome = ""
                for _attempt in range(2):
                    try:
                        response = http.post(self.url, json={"data": {}})
                    except httpx.TransportError as exc:
                        outcome = repr(exc)
                        continue
                    if response.status_code == 200:
                        outcome = ""
                        break
                    outcome = response.text
                if outcome:
                    self.lost.append(outcome)
                else:
                    self.ok += 1

    def __enter__(self) -> RetryingLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _workers_of(home: Path) -> list[int]:
    """The instance workers serving from ``home`` (their command names its working copies):
    fresh ones, and those forked from a fork server, not the fork servers themselves (an
    instance forked from one has it as its parent, and the same command)."""
    found = _worker_processes(home)
    forked = {pid for pid in found if _parent(pid) in found}
    servers = {_parent(pid) for pid in forked}
    return [pid for pid in found if pid not in servers]


def _parent(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line for line in status.splitlines() if line.startswith("PPid:")).split()[1])


def _worker_processes(home: Path) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status or not os.path.basename(cmdline[0]).startswith(b"python"):
            continue
        if any(b"worker.py" in arg for arg in cmdline) and str(home).encode() in b" ".join(cmdline):
            found.append(int(name))
    return found


def _kill_serving_process_under_load(server: Server, instances: int) -> RetryingLoad:
    client = server.client()
    client.publish(PROJECTS / "versioned", file="model.py", function="which", name="steady")
    client.scale("steady", instances)
    wait_until(lambda: len(_workers_of(server.home)) == instances, timeout=60)
    before = server.serving_pid
    with RetryingLoad(f"{server.url}/models/steady/latest/model") as load:
        wait_until(lambda: load.ok >= 200, timeout=60, interval=0.01)
        os.kill(before, signal.SIGKILL)
        wait_until(lambda: server.serving_pid != before, timeout=30, interval=0.01)
        served = load.ok
        wait_until(lambda: load.ok >= served + 200, timeout=60, interval=0.01)
    # One set of instances: the dead process's are gone, the new one's are up.
    wait_until(lambda: len(_workers_of(server.home)) == instances, timeout=30)
    assert server.process is not None
    assert server.process.poll() is None
    return load


@pytest.mark.parametrize("processes", [1, 2])
def test_a_killed_serving_process_is_back_and_a_client_retrying_once_loses_no_call(
    tmp_path: Path, processes: int
) -> None:
    home = tmp_path / "home"
    with running_server(home, {"MODELHOST_GATEWAY_PROCESSES": str(processes)}) as server:
        load = _kill_serving_process_under_load(server, instances=2)
        assert load.lost == []
    assert "the serving process was killed by signal 9" in server.log.read_text()


def test_what_a_killed_serving_process_left_running_outside_a_sandbox_is_ended(
    tmp_path: Path,
) -> None:
    # Without a sandbox nothing ties a busy worker to its server: the arbiter, which
    # inherits it, ends it before the next serving process starts its own.
    env = {"MODELHOST_ISOLATION": "none"}
    with running_server(tmp_path / "home", env) as server:
        client = server.client()
        client.publish(PROJECTS / "versioned", file="model.py", function="which", name="busy")
        [worker] = wait_until(lambda: _workers_of(server.home), timeout=60)
        _spin(server, "busy")
        wait_until(lambda: _cpu_ticks(worker) > 10, timeout=30, interval=0.05)  # in the loop
        before = server.serving_pid
        os.kill(before, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker), timeout=30)
        wait_until(lambda: server.invoke("busy", {"data": {}}).status_code == 200, timeout=60)
        assert len(_workers_of(server.home)) == 1


def test_a_start_ends_what_the_pid_files_say_a_killed_server_left(tmp_path: Path) -> None:
    # The arbiter and the serving process both killed at once (say by the OOM killer): a
    # worker outside a sandbox goes on alone, and the next start ends it.
    env = {"MODELHOST_ISOLATION": "none"}
    home = tmp_path / "home"
    server = Server(home, env).start()
    try:
        client = server.client()
        client.publish(PROJECTS / "versioned", file="model.py", function="which", name="busy")
        [worker] = wait_until(lambda: _workers_of(home), timeout=60)
        _spin(server, "busy")
        wait_until(lambda: _cpu_ticks(worker) > 10, timeout=30, interval=0.05)
        assert server.process is not None
        serving = server.serving_pid
        server.process.kill()
        os.kill(serving, signal.SIGKILL)
        server.process.wait()
        wait_until(lambda: _zombie(serving), timeout=10)
        # the worker is in its endless loop, with nobody left to end it
        assert _cpu_ticks(worker) > 10
        assert not _zombie(worker)
    finally:
        server.stop()
    with running_server(home, env) as restarted:
        wait_until(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker), timeout=10)
        assert "left behind" in restarted.log.read_text()


def _spin(server: Server, model: str) -> None:
    """A call that never ends (the function loops), made in the background."""

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its server is killed under it
            httpx.post(
                f"{server.url}/models/{model}/latest/model",
                json={"data": {"loop": True}},
                timeout=60,
            )

    threading.Thread(target=call, daemon=True).start()


def _cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _zombie(pid: int) -> bool:
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_an_instance_holds_neither_the_data_directory_lock_nor_the_servers_port(
    tmp_path: Path,
) -> None:
    # The serving process inherits both from the arbiter; its instances must not, or a
    # model could take connections off the port, or keep the data directory locked.
    with running_server(tmp_path / "home", {"MODELHOST_ISOLATION": "none"}) as server:
        client = server.client()
        client.publish(PROJECTS / "versioned", file="model.py", function="which", name="plain")
        [worker] = wait_until(lambda: _workers_of(server.home), timeout=60)
        targets = [
            os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")
        ]
        assert str(server.home / "server.lock") not in targets
        assert sum(target.startswith("socket:") for target in targets) == 1  # its connection
