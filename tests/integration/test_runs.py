"""Runs and schedules through a real server: retraining the wine example and publishing the
result, failing runs, a version that fails to load, cancelling, timeouts, a schedule that fires
by itself, and what a server restart does to runs and schedules."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from modelhost import errors
from tests.helpers import PROJECTS, WINE_ROW, Server, running_server, wait_until

pytestmark = pytest.mark.integration

RUN_ENV = {
    "MODELHOST_SCHEDULER_INTERVAL_SECONDS": "0.2",
    "MODELHOST_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
}


@pytest.fixture(scope="module")
def runs_server(
    tmp_path_factory: pytest.TempPathFactory, server_database: dict[str, str]
) -> Iterator[Server]:
    """Runs and schedules on SQLite, then on PostgreSQL."""
    home = tmp_path_factory.mktemp("runs") / "home"
    with running_server(home, {**RUN_ENV, **server_database}) as running:
        yield running


def _calc_model(server: Server, name: str) -> None:
    server.client().publish(PROJECTS / "calc", name=name, file="calc.py", function="add")


def _run_id(stderr: str) -> str:
    line = next(line for line in stderr.splitlines() if line.startswith("Run "))
    return line.split()[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_run_retrains_the_wine_example_and_publishes_the_next_version_which_answers_calls(
    runs_server: Server, wine_project: Path, tmp_path: Path
) -> None:
    client = runs_server.client()
    client.publish(wine_project, name="retrained", file="predict.py", function="predict")
    project = tmp_path / "wine"
    shutil.copytree(wine_project, project, ignore=shutil.ignore_patterns("results"))

    result = runs_server.cli(
        "run",
        str(project),
        "--publish-model",
        "retrained",
        "--file",
        "predict.py",
        "--function",
        "predict",
        "--",
        "python",
        "train.py",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "test accuracy:" in result.stdout  # the run's output, followed live
    assert "Version 2 of retrained is running: predict(features)" in result.stdout
    # A success is told once: the exit status, the published version, then the version's state.
    assert result.stdout.count("Exited with status 0") == 1, result.stdout
    assert result.stdout.count("ublished version 2") == 1, result.stdout
    assert f"Run {_run_id(result.stderr)} succeeded.\n" in result.stdout
    answer = runs_server.invoke("retrained", {"parameters": [WINE_ROW]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["release"]["model_version_number"] == 2

    run_id = _run_id(result.stderr)
    run = client.run(run_id)
    assert run["status"] == "succeeded"
    assert run["exit_code"] == 0
    assert run["published_version"] == 2
    assert run["duration_seconds"] > 0
    assert not (runs_server.home / "runs" / run_id / "work").exists()  # the copy is removed
    assert "saved" in client.run_logs(run_id)["text"]  # the log is kept
    (event,) = [e for e in client.audit("retrained", action="publish") if e["version"] == 2]
    assert event["detail"]["run_id"] == run_id
    assert client.version("retrained", 2)["description"] == f"Published by run {run_id}"
    listed = runs_server.cli("runs", "list", "--model", "retrained", check=True).stdout
    assert run_id in listed
    assert "succeeded" in listed


def test_a_failing_run_publishes_nothing_and_the_cli_exits_with_one_error_line(
    runs_server: Server,
) -> None:
    _calc_model(runs_server, "unchanged")
    fail = "import sys; print('bad data'); sys.exit(3)"
    result = runs_server.cli(
        "run",
        str(PROJECTS / "calc"),
        "--publish-model",
        "unchanged",
        "--file",
        "calc.py",
        "--function",
        "add",
        "--",
        "python",
        "-c",
        fail,
    )

    assert result.returncode == 1
    assert "bad data" in result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1
    assert "failed: Exited with status 3" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert [v["number"] for v in runs_server.client().versions("unchanged")] == [1]
    run = runs_server.client().run(_run_id(result.stderr))
    assert (run["status"], run["exit_code"], run["published_version"]) == ("failed", 3, None)


def test_a_run_whose_version_fails_to_load_never_replaces_the_serving_version(
    runs_server: Server,
) -> None:
    _calc_model(runs_server, "guarded")
    client = runs_server.client()
    breaks_it = "open('calc.py', 'w').write('raise RuntimeError(\"broken by the run\")')"
    started = client.start_run(
        PROJECTS / "calc",
        ["python", "-c", breaks_it],
        model="guarded",
        file="calc.py",
        function="add",
    )
    run = client.follow_run(started["id"])

    assert (run["status"], run["published_version"]) == ("failed", 2)
    assert "version 2 (calc.py:add), which failed to load: " in run["message"]
    assert "broken by the run" in run["message"]
    with pytest.raises(errors.BuildFailed) as failed:
        client.wait_for_version("guarded", 2)
    assert "broken by the run" in failed.value.build_log
    answer = runs_server.invoke("guarded", {"data": {"x": 1, "y": 2}})
    assert answer.json()["release"]["model_version_number"] == 1


def test_a_run_whose_published_function_does_not_exist_fails_naming_the_version_and_why(
    runs_server: Server,
) -> None:
    _calc_model(runs_server, "nofunc")
    result = runs_server.cli(
        "run",
        str(PROJECTS / "calc"),
        "--publish-model",
        "nofunc",
        "--file",
        "calc.py",
        "--function",
        "nofunc",
        "--",
        "python",
        "-c",
        "print('trained')",
    )

    assert result.returncode == 1, result.stdout + result.stderr
    run_id = _run_id(result.stderr)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error_lines == [
        f"Error: Run {run_id} failed: Exited with status 0; published version 2 "
        "(calc.py:nofunc), which failed to load: 'calc.py' has no function named 'nofunc'. "
        "Callables defined there: add. 'modelhost versions nofunc --number 2' shows its build log."
    ], result.stderr
    assert "Failed:" in result.stderr  # the version's build log, as publish shows it
    assert "which failed to load" in result.stdout  # the run's log says it too
    assert "succeeded" not in result.stdout
    shown = runs_server.cli("runs", "show", run_id, check=True).stdout
    assert "status:             failed\n" in shown
    assert "published version 2 (calc.py:nofunc), which failed to load" in shown
    assert "goes live" not in shown
    assert "exit_code:          0\n" in shown
    (listed,) = [
        line
        for line in runs_server.cli("runs", "list", check=True).stdout.splitlines()
        if line.startswith(run_id)
    ]
    assert listed.split()[1] == "failed"
    answer = runs_server.invoke("nofunc", {"data": {"x": 1, "y": 2}})
    assert answer.json()["release"]["model_version_number"] == 1


def test_a_run_says_its_version_is_loading_until_it_has_loaded_and_then_succeeds(
    runs_server: Server,
) -> None:
    _calc_model(runs_server, "slow-loader")
    client = runs_server.client()
    slows_it = "open('calc.py', 'a').write('\\nimport time\\ntime.sleep(3)\\n')"
    started = client.start_run(
        PROJECTS / "calc",
        ["python", "-c", slows_it],
        model="slow-loader",
        file="calc.py",
        function="add",
    )

    def loading() -> dict[str, object] | None:
        run = client.run(started["id"])
        return run if run["published_version"] is not None else None

    run = wait_until(loading)
    assert run["status"] == "running"
    assert run["message"] == (
        "Exited with status 0; published version 2 (calc.py:add), which is loading; the run "
        "ends once it has loaded or failed to."
    )
    with pytest.raises(errors.Conflict, match="which is loading; nothing to cancel"):
        client.cancel_run(started["id"])
    run = client.follow_run(started["id"])
    assert (run["status"], run["exit_code"]) == ("succeeded", 0)
    assert run["message"] == (
        "Exited with status 0; published version 2 (calc.py:add), which has loaded."
    )
    assert client.version("slow-loader", 2)["status"] in ("ready", "running")


def test_a_schedule_whose_new_version_cannot_load_shows_its_last_run_failed(
    runs_server: Server,
) -> None:
    _calc_model(runs_server, "nightly-broken")
    client = runs_server.client()
    schedule = client.create_schedule(
        PROJECTS / "calc",
        ["python", "-c", "print('retraining')"],
        every="1s",
        model="nightly-broken",
        file="calc.py",
        function="nofunc",
    )
    try:
        finished = wait_until(
            lambda: [
                r
                for r in client.runs(schedule=schedule["id"])
                if r["published_version"] and r["finished_at"]
            ],
            timeout=60,
        )
    finally:
        client.pause_schedule(schedule["id"])

    run = finished[-1]  # the oldest: a schedule has one run at a time
    assert run["status"] == "failed"
    assert "which failed to load: 'calc.py' has no function named 'nofunc'" in run["message"]
    shown = client.schedule(schedule["id"])["last_run"]
    assert shown is not None
    assert shown["status"] != "succeeded"
    listed = runs_server.cli("runs", "list", "--schedule", schedule["id"], check=True).stdout
    assert "succeeded" not in listed
    client.delete_schedule(schedule["id"])


def _processes_running(*argv: str) -> list[int]:
    """Host pids of the processes whose command line is ``argv`` (a sandboxed run sees pids
    of its own, so the pid it prints is no use outside)."""
    wanted = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
    return found


def test_cancel_kills_the_run_with_every_process_it_started(runs_server: Server) -> None:
    duration = f"120.{secrets.randbelow(10**6)}"  # tells this test's child from any other
    script = (
        f"import subprocess, time; child = subprocess.Popen(['sleep', '{duration}']); "
        "print('CHILD', child.pid, flush=True); time.sleep(120)"
    )
    started = runs_server.cli(
        "run", str(PROJECTS / "calc"), "--detach", "--", "python", "-c", script, check=True
    )
    run_id = started.stdout.strip()
    client = runs_server.client()

    def child_pid() -> int | None:
        lines = client.run_logs(run_id)["text"].splitlines()
        started = any(line.startswith("CHILD ") for line in lines)
        return next(iter(_processes_running("sleep", duration)), None) if started else None

    child = wait_until(child_pid)
    assert _alive(child)

    cancelled = runs_server.cli("runs", "cancel", run_id, check=True)

    assert "cancelled" in cancelled.stdout
    wait_until(lambda: not _alive(child), timeout=10)
    assert client.run(run_id)["status"] == "cancelled"
    again = runs_server.cli("runs", "cancel", run_id)
    assert again.returncode == 1
    assert "already finished (cancelled)" in again.stderr


def test_a_cancelled_run_gets_sigterm_first_and_may_clean_up_before_it_ends(
    runs_server: Server,
) -> None:
    # docs/cli.md: a running run gets SIGTERM on its whole process group, then SIGKILL 5 s
    # later. (What it prints is joined at run time: the log also shows the command itself.)
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    print('-'.join(['checkpoint', 'saved']), flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('-'.join(['training', 'started']), flush=True)\n"
        "time.sleep(120)\n"
    )
    client = runs_server.client()
    run_id = client.start_run(PROJECTS / "calc", ["python", "-c", script])["id"]
    wait_until(lambda: "training-started" in client.run_logs(run_id)["text"])
    client.cancel_run(run_id)
    wait_until(lambda: client.run(run_id)["status"] == "cancelled")
    assert "checkpoint-saved" in client.run_logs(run_id)["text"]


def test_at_most_max_concurrent_runs_execute_and_the_others_wait_queued(
    runs_server: Server,
) -> None:
    client = runs_server.client()
    started = [client.start_run(PROJECTS / "calc", ["sleep", "30"]) for _ in range(3)]
    ids = [run["id"] for run in started]

    def statuses() -> list[str] | None:
        found = [client.run(run_id)["status"] for run_id in ids]
        return found if found.count("running") == 2 else None

    assert wait_until(statuses) == ["running", "running", "queued"]  # oldest first
    client.cancel_run(ids[0])
    wait_until(lambda: client.run(ids[2])["status"] == "running")
    for run_id in ids[1:]:
        client.cancel_run(run_id)
    wait_until(lambda: all(client.run(i)["status"] == "cancelled" for i in ids))


def test_a_run_past_its_timeout_is_killed_and_fails(runs_server: Server) -> None:
    result = runs_server.cli("run", str(PROJECTS / "calc"), "--timeout", "0.5", "--", "sleep", "60")
    assert result.returncode == 1
    assert "failed: Timed out after" in result.stderr


def test_a_command_that_does_not_exist_fails_the_run_with_the_reason(
    runs_server: Server,
) -> None:
    result = runs_server.cli("run", str(PROJECTS / "calc"), "--", "no-such-program-here")
    assert result.returncode == 1
    assert "Could not start 'no-such-program-here'" in result.stderr


def test_a_schedule_fires_by_itself_and_publishes_each_successful_run(
    runs_server: Server,
) -> None:
    _calc_model(runs_server, "scheduled")
    client = runs_server.client()
    created = runs_server.cli(
        "schedules",
        "create",
        str(PROJECTS / "calc"),
        "--every",
        "1s",
        "--publish-model",
        "scheduled",
        "--file",
        "calc.py",
        "--function",
        "add",
        "--",
        "python",
        "-c",
        "print('retraining')",
        check=True,
    )
    schedule_id = created.stdout.split()[1].rstrip(":")

    def published() -> dict[str, object] | None:
        # finished too: the run records its version a moment before it records its status
        runs = client.runs(schedule=schedule_id)
        return next((r for r in runs if r["published_version"] and r["finished_at"]), None)

    run = wait_until(published, timeout=60)
    runs_server.cli("schedules", "pause", schedule_id, check=True)
    updated = runs_server.cli(
        "schedules",
        "update",
        schedule_id,
        str(PROJECTS / "calc"),
        "--cron",
        "0 2 * * *",
        "--timezone",
        "Europe/Berlin",
        "--",
        "python",
        "-c",
        "print('nightly')",
        check=True,
    )
    assert "cron '0 2 * * *' (Europe/Berlin); paused." in updated.stdout

    assert run["status"] == "succeeded"
    assert "retraining" in client.run_logs(str(run["id"]))["text"]
    version = client.wait_for_version("scheduled", int(run["published_version"]))  # type: ignore[call-overload]
    assert version["status"] in ("running", "ready")
    events = [e for e in client.audit("scheduled", action="publish") if e["detail"].get("run_id")]
    assert events[-1]["detail"]["schedule_id"] == schedule_id
    shown = client.schedule(schedule_id)
    assert shown["paused"] is True
    assert shown["model"] is None  # the update left out --publish-model
    assert shown["last_run"] is not None
    listed = runs_server.cli("schedules", "list", check=True).stdout
    assert schedule_id in listed
    runs_server.cli("schedules", "delete", schedule_id, check=True)
    with pytest.raises(errors.ScheduleNotFound):
        client.schedule(schedule_id)


def test_a_restart_fails_the_interrupted_run_kills_its_processes_and_fires_missed_ticks_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    server = Server(home, RUN_ENV).start()
    try:
        client = server.client()
        started = client.start_run(PROJECTS / "calc", ["sleep", "120"])
        wait_until(lambda: client.run(started["id"])["pid"])
        schedule = client.create_schedule(PROJECTS / "calc", ["python", "-c", "pass"], every="1h")
        assert server.process is not None
        server.process.kill()  # no clean shutdown: the run is left behind
        server.process.wait()
    finally:
        server.stop()
    engine = sa.create_engine(f"sqlite:///{home / 'modelhost.db'}")
    with engine.begin() as conn:
        orphan = conn.execute(
            sa.text("SELECT pid FROM runs WHERE id = :id"), {"id": started["id"]}
        ).scalar_one()
        # Five hourly ticks passed while the server was down.
        conn.execute(
            sa.text("UPDATE schedules SET next_run_at = :t WHERE id = :id"),
            {"t": "2020-01-01 00:00:00.000000", "id": schedule["id"]},
        )
    engine.dispose()
    # In a sandbox the run dies with the server (tests/security checks that); without one it
    # is left running until the restart ends it.

    with running_server(home, RUN_ENV) as restarted:
        client = restarted.client()
        run = client.run(started["id"])
        assert run["status"] == "failed"
        assert "Interrupted" in run["message"]
        wait_until(lambda: not _alive(orphan), timeout=10)
        fired = wait_until(lambda: client.runs(schedule=schedule["id"]), timeout=10)
        assert len(fired) == 1
        assert client.schedule(schedule["id"])["next_run_at"] > "2026"


@pytest.mark.postgres
def test_runs_and_schedules_publish_on_postgresql_too(tmp_path: Path, postgres_url: str) -> None:
    env = {**RUN_ENV, "MODELHOST_DATABASE_URL": postgres_url}
    with running_server(tmp_path / "home", env) as server:
        _calc_model(server, "on-postgres")
        client = server.client()
        started = client.start_run(
            PROJECTS / "calc",
            ["python", "-c", "print('trained')"],
            model="on-postgres",
            file="calc.py",
            function="add",
        )
        run = client.follow_run(started["id"])
        assert (run["status"], run["published_version"]) == ("succeeded", 2)
        assert client.wait_for_version("on-postgres", 2)["status"] == "running"
        schedule = client.create_schedule(
            PROJECTS / "calc",
            ["python", "-c", "pass"],
            every="1s",
            model="on-postgres",
            file="calc.py",
            function="add",
        )
        fired = wait_until(
            lambda: [r for r in client.runs(schedule=schedule["id"]) if r["published_version"]],
            timeout=60,
        )
        client.pause_schedule(schedule["id"])
        assert fired[0]["published_version"] >= 3


TRAIN_WITH_SIX = """\
import pathlib
import sys

import six

pathlib.Path("results").mkdir(exist_ok=True)
pathlib.Path("results/trained.txt").write_text(f"{six.__version__} {sys.prefix}")
print("trained with six", six.__version__)
"""

SERVE_WITH_SIX = """\
import pathlib
import sys

import six

TRAINED = (
    pathlib.Path("results/trained.txt").read_text().split()
    if pathlib.Path("results/trained.txt").exists()
    else ["untrained", "nowhere"]
)


def info():
    return {"trained_with": TRAINED[0], "trained_in": TRAINED[1], "six": six.__version__,
            "prefix": sys.prefix}
"""


def test_a_run_of_a_project_with_requirements_uses_its_isolated_environment_as_the_version_does(
    runs_server: Server, tmp_path: Path
) -> None:
    project = tmp_path / "sixes"
    project.mkdir()
    (project / "requirements.txt").write_text("six==1.16.0\n")
    (project / "train.py").write_text(TRAIN_WITH_SIX)
    (project / "model.py").write_text(SERVE_WITH_SIX)
    runs_server.client().publish(project, name="sixes", file="model.py", function="info")

    result = runs_server.cli(
        "run",
        str(project),
        "--publish-model",
        "sixes",
        "--file",
        "model.py",
        "--function",
        "info",
        "--",
        "python",
        "train.py",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "environment: isolated, from requirements.txt (six==1.16.0)" in result.stdout
    assert "trained with six 1.16.0" in result.stdout
    answer = runs_server.invoke("sixes", {"data": {}})
    assert answer.status_code == 200, answer.text
    info = answer.json()["result"]
    assert answer.json()["release"]["model_version_number"] == 2
    assert info["trained_with"] == info["six"] == "1.16.0"
    # The run and the version it published ran in the same cached environment.
    assert info["trained_in"] == info["prefix"]
    assert f"{runs_server.home}/envs/" in info["prefix"]
    assert runs_server.client().versions("sixes")[0]["environment"] == "isolated"


PRINT_SIX = "import sys\ntry:\n    import six\nexcept ImportError:\n    six = None\n" + (
    "print('six', six.__version__ if six else None, 'in', sys.prefix)\n"
)


def _sixes_project(root: Path, requirements: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "show.py").write_text(PRINT_SIX)
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    return root


def test_a_run_runs_in_the_environment_it_asks_for_server_isolated_or_named(
    runs_server: Server, tmp_path: Path
) -> None:
    declared = _sixes_project(tmp_path / "declared", "six==1.15.0\n")
    bare = _sixes_project(tmp_path / "bare", None)

    def run(project: Path, *environment: str) -> str:
        result = runs_server.cli("run", str(project), *environment, "--", "python", "show.py")
        assert result.returncode == 0, result.stdout + result.stderr
        return next(line for line in result.stdout.splitlines() if line.startswith("six "))

    assert run(declared).startswith(f"six 1.15.0 in {runs_server.home}/envs/")  # the default
    # the server's own Python: six only if a test dependency brought it (rfc3339-validator does)
    server_six = importlib.metadata.version("six") if importlib.util.find_spec("six") else None
    assert run(declared, "--environment", "server") == f"six {server_six} in {sys.prefix}"
    runs_server.client().create_environment("six-for-runs", "six==1.14.0\n")
    assert run(bare, "--environment", "six-for-runs").startswith(
        f"six 1.14.0 in {runs_server.home}/envs/"
    )
    listed = runs_server.client().runs(limit=3)
    assert [r["environment"] for r in listed] == ["six-for-runs", "server", "auto"]


@pytest.mark.parametrize(
    ("project_requirements", "environment", "says"),
    [
        (None, "isolated", "--environment isolated needs the project's dependencies"),
        ("six\n", "no-such-environment", "There is no environment 'no-such-environment'"),
        ("six\n", "r", "--environment chooses a Python environment"),
        ("six\n", "not valid!", "'not valid!' is not an environment"),
    ],
)
def test_an_environment_a_run_cannot_have_is_refused_with_one_error_line_and_no_run(
    runs_server: Server,
    tmp_path: Path,
    project_requirements: str | None,
    environment: str,
    says: str,
) -> None:
    before = len(runs_server.client().runs(limit=1000))
    bundles = sorted((runs_server.home / "bundles").rglob("*"))
    project = _sixes_project(tmp_path / "p", project_requirements)
    result = runs_server.cli(
        "run", str(project), "--environment", environment, "--", "python", "show.py"
    )
    assert result.returncode == 1
    errors_printed = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors_printed) == 1
    assert says in errors_printed[0]
    assert len(runs_server.client().runs(limit=1000)) == before
    assert sorted((runs_server.home / "bundles").rglob("*")) == bundles  # nothing stored


def test_a_schedule_keeps_its_environment_and_its_runs_get_it(runs_server: Server) -> None:
    client = runs_server.client()
    created = client.create_schedule(
        PROJECTS / "calc", ["python", "-c", "print('hello')"], every="1s", environment="server"
    )
    assert created["environment"] == "server"
    try:
        fired = wait_until(lambda: client.runs(schedule=created["id"]), timeout=60)
        assert fired[0]["environment"] == "server"
    finally:
        client.delete_schedule(created["id"])
