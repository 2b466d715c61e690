"""Isolated environments with real builds: uv resolves and installs ``six`` from the package
index into a server's own data directory (its own uv cache too), and real instances run in them.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration

MODEL = """\
import sys
import time

import six


def versions():
    return {"six": six.__version__, "prefix": sys.prefix}
"""


@pytest.fixture(scope="module")
def envs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own, so its environment and uv caches start empty."""
    with running_server(tmp_path_factory.mktemp("envs") / "home") as running:
        yield running


def project(root: Path, requirements: str | None, model: str = MODEL) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(model)
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    return root


def six_of(server: Server, model: str, route: str = "latest") -> str:
    response = server.invoke(model, {"parameters": []}, route)
    assert response.status_code == 200, response.text
    return str(response.json()["result"]["six"])


def build_seconds(log: str) -> float:
    found = re.search(r"Environment \w+ (?:built|found in the cache) in ([\d.]+) s", log)
    assert found, log
    return float(found.group(1))


def test_two_versions_pinned_to_different_packages_run_side_by_side_each_with_its_own(
    envs_server: Server, tmp_path: Path
) -> None:
    client = envs_server.client()
    lines: list[str] = []
    first = client.publish(
        project(tmp_path / "one", "six==1.16.0\n") / "model.py:versions",
        name="pinned",
        on_log=lines.append,
    )
    assert first["environment"] == "isolated"
    assert first["packages"] == ["six==1.16.0"]
    assert first["python_version"]
    assert any(
        line.endswith("s: six==1.16.0") and "Locked in" in line for line in lines
    )  # the build log came as it grew
    assert "Ready." in lines
    second = client.publish(
        project(tmp_path / "two", "six==1.17.0\n") / "model.py:versions", name="pinned"
    )
    assert second["packages"] == ["six==1.17.0"]
    assert second["environment_hash"] != first["environment_hash"]
    client.start("pinned", 1)  # version 1 runs again, beside version 2
    wait_until(lambda: envs_server.invoke("pinned", {"parameters": []}, "versions/1").is_success)
    assert six_of(envs_server, "pinned", "versions/1") == "1.16.0"
    assert six_of(envs_server, "pinned", "versions/2") == "1.17.0"
    assert six_of(envs_server, "pinned") == "1.17.0"
    detail = client.version("pinned", 1)
    assert "six==1.16.0 \\\n    --hash=sha256:" in detail["lock"]
    listed = envs_server.cli("versions", "pinned", check=True).stdout
    assert f"isolated ({first['python_version']})" in listed


def test_the_same_lock_again_comes_from_the_cache_in_less_time(
    envs_server: Server, tmp_path: Path
) -> None:
    client = envs_server.client()
    cold = client.publish(
        project(tmp_path / "cold", "six==1.15.0\n") / "model.py:versions", name="cache-cold"
    )
    # The same Python asked for by its version: the same interpreter, so the same environment.
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    warm = client.publish(
        project(tmp_path / "warm", "six==1.15.0\n") / "model.py:versions",
        name="cache-warm",
        python=python,
    )
    assert warm["python_version"].startswith(python + ".")
    assert warm["environment_hash"] == cold["environment_hash"]  # two models, one environment
    cold_log = client.version("cache-cold", 1)["build_log"]
    warm_log = client.version("cache-warm", 1)["build_log"]
    assert "found in the cache" in warm_log
    built, cached = build_seconds(cold_log), build_seconds(warm_log)
    print(f"environment: {built:.2f} s built, {cached:.2f} s cached")
    assert "found in the cache" not in cold_log
    assert six_of(envs_server, "cache-warm") == "1.15.0"


def test_a_package_that_cannot_be_resolved_fails_only_the_new_version_naming_it(
    envs_server: Server, tmp_path: Path
) -> None:
    client = envs_server.client()
    client.publish(project(tmp_path / "ok", "six==1.16.0\n") / "model.py:versions", name="unres")
    with pytest.raises(errors.BuildFailed) as failure:
        client.publish(
            project(tmp_path / "bad", "six==1.16.0\nnosuchpackage-modelhost-zz\n")
            / "model.py:versions",
            name="unres",
        )
    assert "nosuchpackage-modelhost-zz" in failure.value.message
    assert "Failed:\nThe requirements cannot be resolved" in failure.value.build_log
    failed = client.version("unres", 2)
    assert failed["status"] == "failed"
    assert failed["failure"]["kind"] == "environment"
    assert failed["failure"]["message"].startswith("The requirements cannot be resolved")
    assert six_of(envs_server, "unres") == "1.16.0"  # version 1 still serves
    assert list((envs_server.home / "envs" / ".tmp").iterdir()) == []


def test_a_version_whose_environment_was_deleted_is_rebuilt_from_its_lock(
    envs_server: Server, tmp_path: Path
) -> None:
    client = envs_server.client()
    version = client.publish(
        project(tmp_path / "p", "six==1.14.0\n") / "model.py:versions", name="rebuilt"
    )
    client.stop("rebuilt", 1)
    wait_until(lambda: client.version("rebuilt", 1)["status"] == "stopped")
    shutil.rmtree(envs_server.home / "envs" / version["environment_hash"])
    client.start("rebuilt", 1)
    wait_until(lambda: envs_server.invoke("rebuilt", {"parameters": []}).is_success, timeout=60)
    assert six_of(envs_server, "rebuilt") == "1.14.0"
    log = client.version("rebuilt", 1)["build_log"]
    assert "Installing from the stored lock: six==1.14.0" in log


def test_prune_removes_only_environments_no_version_uses(
    envs_server: Server, tmp_path: Path
) -> None:
    client = envs_server.client()
    kept = client.publish(
        project(tmp_path / "k", "six==1.17.0\n") / "model.py:versions", name="kept-env"
    )
    doomed = client.publish(
        project(tmp_path / "p", "six==1.13.0\n") / "model.py:versions", name="short-lived"
    )
    client.delete("short-lived", confirm="short-lived")
    result = envs_server.cli("envs", "prune", check=True)
    assert result.stdout.startswith("Removed 1 environment(s)")
    assert not (envs_server.home / "envs" / doomed["environment_hash"]).exists()
    assert (envs_server.home / "envs" / kept["environment_hash"]).is_dir()
    in_use = [v["environment_hash"] for m in client.models() for v in client.versions(m.name)]
    assert all((envs_server.home / "envs" / key).is_dir() for key in in_use if key)
    assert six_of(envs_server, "kept-env") == "1.17.0"


def test_a_named_environment_is_locked_revised_on_change_and_used_instead_of_the_project_file(
    envs_server: Server, tmp_path: Path
) -> None:
    client = envs_server.client()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("six==1.16.0\n")
    created = envs_server.cli("envs", "create", "six-env", "--requirements", str(requirements))
    assert created.returncode == 0, created.stderr
    assert "six-env revision 1 (created)" in created.stdout
    again = envs_server.cli("envs", "create", "six-env", "--requirements", str(requirements))
    assert "six-env revision 1 (unchanged)" in again.stdout
    requirements.write_text("six==1.17.0\n")
    revised = client.create_environment("six-env", requirements.read_text())
    assert (revised["revision"], revised["created"]) == (2, True)
    assert revised["packages"] == ["six==1.17.0"]
    # The project asks for 1.16.0, the named environment wins.
    published = envs_server.cli(
        "publish",
        str(project(tmp_path / "p", "six==1.16.0\n") / "model.py:versions"),
        "--name",
        "named-user",
        "--environment",
        "six-env",
    )
    assert published.returncode == 0, published.stdout + published.stderr
    assert "Environment: six-env revision 2" in published.stdout
    assert six_of(envs_server, "named-user") == "1.17.0"
    shown = envs_server.cli("envs", "show", "six-env", "--revision", "1", check=True).stdout
    assert "six==1.16.0" in shown
    assert "revision:     1 of 2" in shown
    listed = envs_server.cli("envs", "list", check=True).stdout
    assert re.search(r"six-env\s+python\s+2\s+\S+\s+1\s+yes", listed), listed
    events = client.audit(action="environment-create")
    assert [(e["outcome"], e["detail"]) for e in events[:2]] == [
        ("success", {"name": "six-env", "revision": 2}),
        ("success", {"name": "six-env", "revision": 1}),
    ]
    version = envs_server.cli("versions", "named-user", "--number", "1", check=True).stdout
    assert "environment:    six-env" in version
    assert "packages:       six==1.17.0" in version


def test_environment_mistakes_get_one_error_line_each(envs_server: Server, tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("nosuchpackage-modelhost-zz\n")
    cases = [
        (
            ("envs", "create", "broken", "--requirements", str(requirements)),
            "nosuchpackage-modelhost-zz was not found",
        ),
        (("envs", "show", "nowhere"), "There is no environment 'nowhere'"),
        (("envs", "create", "server", "--requirements", str(requirements)), "not a valid"),
        (
            (
                "publish",
                str(PROJECTS / "calc" / "calc.py:add"),
                "--name",
                "e1",
                "--environment",
                "nowhere",
            ),
            "There is no environment 'nowhere'",
        ),
        (
            (
                "publish",
                str(PROJECTS / "calc" / "calc.py:add"),
                "--name",
                "e2",
                "--environment",
                "isolated",
            ),
            "needs the project's dependencies",
        ),
        (
            (
                "publish",
                str(project(tmp_path / "p", "six\n") / "model.py:versions"),
                "--name",
                "e3",
                "--python",
                "3.99",
            ),
            "There is no Python 3.99 on this server",
        ),
    ]
    for args, message in cases:
        result = envs_server.cli(*args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("Error: "), result.stderr
        assert message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    response = httpx.get(
        f"{envs_server.url}/api/v1/models/e1",
        headers={"Authorization": f"Bearer {envs_server.api_key}"},
    )
    assert response.status_code == 404  # a refused publish leaves nothing behind


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_a_git_project_is_published_at_its_ref_with_the_commit_recorded(
    envs_server: Server, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    (repo / "predict.py").write_text("def predict():\n    return 'first'\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "first")
    _git(repo, "tag", "v1")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "predict.py").write_text("def predict():\n    return 'second'\n")
    _git(repo, "commit", "--quiet", "-am", "second")
    target = f"git+file://{repo}@v1"
    result = envs_server.cli(
        "publish", target, "--file", "predict.py", "--function", "predict", "--name", "from-git"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Cloning {target}" in result.stdout
    assert envs_server.invoke("from-git", {"parameters": []}).json()["result"] == "first"
    version = envs_server.client().version("from-git", 1)
    assert (version["source"], version["git_commit"]) == (target, first)
    assert f"Source: {target} at commit {first}" in version["build_log"]
    assert version["environment"] == "server"  # no requirements: the server's Python
    # Later commits change nothing published; the default branch is the newest commit.
    envs_server.client().publish(
        f"git+file://{repo}", file="predict.py", function="predict", name="from-git"
    )
    assert envs_server.invoke("from-git", {"parameters": []}).json()["result"] == "second"
    assert envs_server.client().version("from-git", 1)["git_commit"] == first
    missing = envs_server.cli(
        "publish",
        f"git+file://{repo}@nope",
        "--file",
        "predict.py",
        "--function",
        "predict",
        "--name",
        "from-git",
    )
    assert missing.returncode == 1
    assert "'nope' is not a branch, tag or commit" in missing.stderr


def test_a_build_past_the_timeout_fails_cleanly(tmp_path: Path) -> None:
    env = {"MODELHOST_ENVIRONMENT_BUILD_TIMEOUT_SECONDS": "0.01"}
    with running_server(tmp_path / "home", env) as server:
        with pytest.raises(errors.BuildFailed) as failure:
            server.client().publish(
                project(tmp_path / "p", "six==1.16.0\n") / "model.py:versions", name="slow"
            )
        assert "environment_build_timeout_seconds" in failure.value.message
        envs = server.home / "envs"
        leftovers = (
            [p for p in envs.iterdir() if not p.name.startswith(".")] if envs.exists() else []
        )
        assert leftovers == []


def _processes_using(home: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True)
    return found.stdout.split()


def test_stopping_the_server_during_a_build_is_prompt_and_the_build_resumes_at_next_start(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    source = project(tmp_path / "p", "six==1.16.0\n") / "model.py:versions"
    with socket.socket() as silent:  # a package index that accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        index = f"http://127.0.0.1:{silent.getsockname()[1]}/simple"
        server = Server(home, {"UV_DEFAULT_INDEX": index}).start()
        try:
            client = server.client()
            client.publish(source, name="interrupted", wait=False)
            wait_until(lambda: "Resolving" in client.version("interrupted", 1)["build_log"])
            server.stop()
            # It stopped on its own (SIGTERM), not killed when that did not end it.
            assert server.process is not None
            assert server.process.returncode == 0, server.log.read_text()
            wait_until(lambda: not _processes_using(home), timeout=5)  # uv was stopped too
        finally:
            server.stop()
    with running_server(home) as again:
        wait_until(
            lambda: again.client().version("interrupted", 1)["status"] == "running", timeout=60
        )
        assert six_of(again, "interrupted") == "1.16.0"
