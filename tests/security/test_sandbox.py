"""Attacks on a real, sandboxed server (issue 13): an evil model and an evil run try to reach
the server's secrets and other models, a non-admin tries to run code with no model, a removed
editor's schedule ticks, a model with its network off tries to connect, code tries to escape
the process and file limits or to outlive the server, and a server without bubblewrap says so.

Each probe's expected answer comes from the isolation the issue asks for: no file of the data
directory but the code's own working copy, no other process's environment, an unprivileged uid
of the model's own, writes only into a run's own copy, the limits the settings name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost import Client, errors
from tests.helpers import PROJECTS, Server, free_port, running_server, wait_until

pytestmark = pytest.mark.integration

EVIL = Path(__file__).with_name("evil.py")
MAX_PROCESSES = 64
MAX_OPEN_FILES = 256
FIRST_UID = 1_000_000_000
PASSWORD = "correct horse battery"
ENV = {
    "MODELHOST_SANDBOX_MAX_PROCESSES": str(MAX_PROCESSES),
    "MODELHOST_SANDBOX_MAX_OPEN_FILES": str(MAX_OPEN_FILES),
    "MODELHOST_SCHEDULER_INTERVAL_SECONDS": "0.2",
    "MODELHOST_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("sandbox") / "home", ENV) as running:
        yield running


@pytest.fixture(scope="module")
def evil_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("evil") / "evil"
    project.mkdir()
    shutil.copy(EVIL, project / "evil.py")
    return project


@pytest.fixture(scope="module")
def victim(server: Server) -> dict[str, Any]:
    """Another model, holding a secret variable in its running instance's environment."""
    client = server.client()
    marker = f"victim-secret-{secrets.token_hex(8)}"
    client.publish(PROJECTS / "calc", name="victim", file="calc.py", function="add")
    client.set_env("victim", "VICTIM_SECRET", marker, secret=True)
    pid = wait_until(lambda: _instance_with(marker), timeout=60)
    return {"marker": marker, "pid": pid}


@pytest.fixture(scope="module")
def evil_model(server: Server, evil_project: Path) -> str:
    server.client().publish(evil_project, name="evil", file="evil.py", function="probe")
    return "evil"


def _instance_with(marker: str) -> int | None:
    """The host pid of a process whose environment holds ``marker``, seen from the host."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{name}/environ").read_bytes():
                    return int(name)
            except OSError:
                continue
    return None


def _uid_of(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x[:4] == "Uid:")
    return int(line.split()[1])


def _server_files(home: Path) -> list[str]:
    names = ["server.key", "credentials", "modelhost.db"]
    return [str(home / name) for name in names if (home / name).exists()]


def _targets(server: Server, victim: dict[str, Any], outside: list[str]) -> dict[str, Any]:
    victim_copy = Path(os.readlink(f"/proc/{victim['pid']}/cwd"))
    return {
        "home": str(server.home),
        "secret": victim["marker"],
        "read": [*_server_files(server.home), str(victim_copy / "calc.py"), str(server.log)],
        "write": outside,
        "threads": MAX_PROCESSES * 3,
        "files": MAX_OPEN_FILES * 2,
    }


def _outside(server: Server, tag: str) -> list[str]:
    """Places code must not write to, each of which the test can check on the host after."""
    return [
        str(server.home / f"pwned-{tag}"),
        str(server.home / "work" / f"pwned-{tag}"),
        f"/etc/pwned-{tag}",
        f"/usr/pwned-{tag}",
        str(server.log.parent / f"pwned-{tag}"),
    ]


def _assert_confined(seen: dict[str, Any], server: Server, outside: list[str]) -> None:
    assert seen["working_dir"] == seen["cwd"]  # MODELHOST_WORKING_DIR: the project folder
    assert seen["uid"] == seen["euid"] >= FIRST_UID, seen["uid"]  # never root, never the server's
    assert seen["uid"] != os.geteuid()
    assert seen["groups"] == []
    for path, what in seen["reads"].items():
        assert what.startswith("refused"), f"the code could read {path}"
    for path in outside:
        assert seen["writes"][path].startswith("refused"), f"the code could write {path}"
        assert not Path(path).exists(), f"{path} appeared on the host"
    assert seen["environ_with_secret"] == []  # no other process's environment
    assert len(seen["pids"]) <= 4, seen["pids"]  # its own PID namespace: the server is not there
    listing = seen["home_listing"] or []
    assert not {"server.key", "credentials", "modelhost.db", "logs", "bundles"} & set(listing)
    assert seen["limits"] == {"nproc": MAX_PROCESSES, "nofile": MAX_OPEN_FILES}
    # Nothing of the server's own came along: no shared memory (the token counters and the
    # load board would let it reset other models' limits), no file of the data directory but
    # its own log, which its output goes to.
    opened = seen["open_files"]
    assert [what for what in opened.values() if "memfd:" in what] == []
    own_log = opened["1"]
    assert [w for w in opened.values() if w.startswith(str(server.home)) and w != own_log] == []
    assert 0 < seen["threads"] < MAX_PROCESSES
    assert 0 < seen["files"] < MAX_OPEN_FILES


def test_the_secrets_the_evil_code_goes_for_exist_on_the_host(
    server: Server, victim: dict[str, Any]
) -> None:
    # The probes below are only worth their refusals if what they go for is really there.
    assert len(_server_files(server.home)) == 3
    assert _instance_with(victim["marker"]) == victim["pid"]


def test_an_evil_model_reaches_no_secret_no_other_process_and_writes_nowhere(
    server: Server, victim: dict[str, Any], evil_model: str
) -> None:
    outside = _outside(server, "model")
    own_copy = str(server.home / "work")  # its own copy is read-only too
    targets = _targets(server, victim, outside)
    answer = server.invoke(evil_model, {"data": {"targets": targets}})
    assert answer.status_code == 200, answer.text
    seen = answer.json()["result"]

    _assert_confined(seen, server, outside)
    instance = server.client().instances(evil_model)[0]
    copy = Path(os.readlink(f"/proc/{instance['pid']}/cwd"))
    assert copy.is_relative_to(own_copy)
    assert _uid_of(instance["pid"]) == seen["uid"] != _uid_of(victim["pid"])  # a uid per model


def test_an_evil_models_own_working_copy_is_read_only(
    server: Server, victim: dict[str, Any], evil_model: str
) -> None:
    instance = server.client().instances(evil_model)[0]
    copy = Path(os.readlink(f"/proc/{instance['pid']}/cwd"))
    targets = {"home": str(server.home), "write": [str(copy / "evil.py"), str(copy / "new")]}
    seen = server.invoke(evil_model, {"data": {"targets": targets}}).json()["result"]
    assert all(what.startswith("refused") for what in seen["writes"].values()), seen["writes"]
    assert not (copy / "new").exists()
    assert (copy / "evil.py").read_text() == EVIL.read_text()


def test_an_evil_run_reaches_no_secret_and_writes_only_into_its_own_copy(
    server: Server, victim: dict[str, Any], evil_project: Path
) -> None:
    client = server.client()  # an admin: runs with no model are theirs to start
    outside = _outside(server, "run")
    targets = _targets(server, victim, [*outside, "mine.txt"])
    run = client.start_run(evil_project, ["python", "evil.py", json.dumps(targets)])
    finished = client.follow_run(run["id"])
    text = client.run_logs(run["id"])["text"]
    assert finished["status"] == "succeeded", text
    seen = json.loads(next(line[5:] for line in text.splitlines() if line.startswith("EVIL ")))

    _assert_confined(seen, server, outside)
    assert seen["writes"]["mine.txt"] == "written"  # a run's copy is its own to write


def test_a_non_admin_may_not_start_a_run_or_a_schedule_with_no_model(
    server: Server, evil_project: Path
) -> None:
    server.client().add_user("mallory", PASSWORD)
    mallory = Client.login(server.url, "mallory", PASSWORD)
    with pytest.raises(errors.Forbidden, match="code_runners"):
        mallory.start_run(evil_project, ["python", "evil.py", "{}"])
    with pytest.raises(errors.Forbidden, match="code_runners"):
        mallory.create_schedule(evil_project, ["python", "evil.py", "{}"], every="1h")
    assert mallory.runs() == []

    env = {**server.env, "MODELHOST_URL": server.url, "MODELHOST_API_KEY": mallory.api_key}
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "run", str(evil_project), "--", "python", "evil.py"],
        env={k: v for k, v in env.items() if k != "MODELHOST_PORT"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors_said = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors_said) == 1, result.stderr
    assert "code_runners" in errors_said[0]
    assert "Traceback" not in result.stderr
    mallory.close()


def test_a_removed_editors_schedule_ticks_denied_pauses_and_is_audited(
    server: Server, evil_project: Path
) -> None:
    admin = server.client()
    admin.add_user("alice", PASSWORD)
    admin.add_user("bob", PASSWORD)
    alice = Client.login(server.url, "alice", PASSWORD)
    bob = Client.login(server.url, "bob", PASSWORD)
    alice.publish(PROJECTS / "calc", name="shared", file="calc.py", function="add")
    alice.set_collaborator("shared", "bob", "editor")
    # Each tick runs a command that fails fast: the run shows the tick ran, nothing publishes.
    schedule = bob.create_schedule(
        evil_project,
        ["python", "-c", "raise SystemExit(3)"],
        every="1s",
        model="shared",
        file="calc.py",
        function="add",
    )

    def runs(status: str) -> list[dict[str, Any]]:
        found = admin.runs(schedule=schedule["id"], limit=200)
        return [run for run in found if run["status"] == status]

    wait_until(lambda: runs("failed"), timeout=60)  # it ran as bob while bob was an editor
    alice.remove_collaborator("shared", "bob")

    denied = wait_until(lambda: runs("denied"), timeout=60)
    assert admin.schedule(schedule["id"])["paused"] is True
    assert admin.run_logs(denied[0]["id"])["text"] == ""  # it never started
    events = admin.audit("shared", action="schedule-denied")
    assert events, "no schedule-denied event"
    assert events[0]["actor"] == "modelhost"
    alice.close()
    bob.close()


def test_a_model_with_its_network_off_cannot_connect_even_to_the_server(
    server: Server, victim: dict[str, Any], evil_project: Path
) -> None:
    client = server.client()
    client.publish(evil_project, name="offline", file="evil.py", function="probe")
    targets = {"home": str(server.home), "port": server.port}
    online = server.invoke("offline", {"data": {"targets": targets}}).json()["result"]
    assert online["connect"] == "connected"  # network is on by default

    generation = client.instances("offline")[0]["id"]
    client.update_model("offline", network=False)
    wait_until(
        lambda: (
            [i for i in client.instances("offline") if i["id"] != generation]
            and all(i["id"] != generation for i in client.instances("offline"))
        ),
        timeout=60,
    )
    offline = server.invoke("offline", {"data": {"targets": targets}})
    assert offline.status_code == 200, offline.text
    assert offline.json()["result"]["connect"].startswith("refused")


def _processes_with(text: str, program: str = "") -> list[int]:
    """Processes whose command line holds ``text`` (and starts with ``program``)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                line = Path(f"/proc/{name}/cmdline").read_bytes()
                if text.encode() in line and line.startswith(program.encode()):
                    found.append(int(name))
            except OSError:
                continue
    return found


def test_instances_runs_and_what_they_started_in_a_new_session_die_with_a_killed_server(
    tmp_path: Path,
) -> None:
    # A model that leaves a process behind in a session of its own at import, and a run
    # that sleeps: neither may outlive a server killed with SIGKILL (no clean-up runs).
    tag = str(secrets.randbelow(10**9)).zfill(9)  # sleep takes it as fractional seconds
    project = tmp_path / "leaver"
    project.mkdir()
    (project / "leaver.py").write_text(
        "import subprocess\n"
        f"subprocess.Popen(['setsid', 'sleep', '1000.{tag}1'], start_new_session=True)\n"
        "def predict(x):\n    return x\n"
    )
    home = tmp_path / "home"
    server = Server(home, ENV).start()
    try:
        client = server.client()
        client.publish(project, name="leaver", file="leaver.py", function="predict")
        client.start_run(project, ["sleep", f"1001.{tag}2"])
        wait_until(
            # the sleeps themselves, not only the sandboxes being set up around them
            lambda: (
                _processes_with(f"1000.{tag}1", "sleep")
                and _processes_with(f"1001.{tag}2", "sleep")
            ),
            timeout=90,
        )
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
    finally:
        server.stop()
    wait_until(lambda: not _processes_with(tag), timeout=60)


def test_isolation_sandbox_refuses_to_start_without_bubblewrap_in_one_error_line(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {
        **os.environ,
        "MODELHOST_HOME": str(tmp_path / "home"),
        "MODELHOST_PORT": str(free_port()),
        "MODELHOST_ISOLATION": "sandbox",
        "PATH": str(empty),  # no bwrap to find
    }
    result = subprocess.run(
        [sys.executable, "-m", "modelhost", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(said) == 1, result.stderr
    assert "apt-get install bubblewrap" in said[0]
    assert "Traceback" not in result.stderr


def test_without_bubblewrap_auto_still_serves_and_says_code_is_not_isolated(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"MODELHOST_ISOLATION": "auto", "PATH": str(empty)}
    with running_server(tmp_path / "home", env) as plain:
        health = httpx.get(f"{plain.url}/health").json()
        assert health["isolation"]["isolated"] is False
        assert "NOT isolated" in health["isolation"]["warning"]
        assert "NOT isolated" in plain.log.read_text()
        plain.client().publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
        assert plain.invoke("calc", {"data": {"x": 1, "y": 2}}).json()["result"] == 3
        added = plain.cli("users", "add", "carol", "--password", PASSWORD, check=True)
        assert "Warning:" in added.stderr
        assert "NOT isolated" in added.stderr


def test_an_environment_build_runs_sandboxed_so_a_packages_build_script_reaches_no_secret(
    server: Server, tmp_path: Path
) -> None:
    # A source package in the project: uv runs its setup.py to resolve the requirements.
    project = tmp_path / "builder"
    package = project / "evilpkg"
    package.mkdir(parents=True)
    key_path = server.home / "server.key"
    (package / "setup.py").write_text(
        "import os\n"
        "try:\n"
        f"    outcome = 'STOLEN ' + open({str(key_path)!r}).read()\n"
        "except OSError as exc:\n"
        "    outcome = 'refused ' + type(exc).__name__\n"
        "raise SystemExit(f'EVILBUILD {outcome} uid={os.getuid()}')\n"
    )
    (project / "requirements.txt").write_text("./evilpkg\n")
    shutil.copy(PROJECTS / "calc" / "calc.py", project / "calc.py")

    with pytest.raises(errors.BuildFailed) as failure:
        server.client().publish(project, name="evil-build", file="calc.py", function="add")

    log = failure.value.build_log
    assert "EVILBUILD refused FileNotFoundError" in log, log  # it ran, and found nothing
    assert "STOLEN" not in log
    assert key_path.read_text().strip() not in log
    uid = int(log.split("EVILBUILD refused FileNotFoundError uid=")[1].split()[0])
    assert uid >= FIRST_UID


def test_requirements_cannot_name_a_server_file_to_have_it_quoted_back(
    server: Server, tmp_path: Path
) -> None:
    project = tmp_path / "quoter"
    project.mkdir()
    key_path = server.home / "server.key"
    (project / "requirements.txt").write_text(f"-r {key_path}\n")
    shutil.copy(PROJECTS / "calc" / "calc.py", project / "calc.py")

    with pytest.raises(errors.BuildFailed) as failure:
        server.client().publish(project, name="quoter", file="calc.py", function="add")

    assert key_path.read_text().strip() not in failure.value.build_log
    assert key_path.read_text().strip() not in failure.value.message
