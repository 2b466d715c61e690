"""Choosing a version's environment, and making environments with the real uv.

The builds resolve and install ``six`` from the package index (a small pure-Python package),
into a data directory of the test's own, with its own uv cache.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.builder import environments, uvenv
from modelhost.settings import Settings, load_settings

UV_ERROR = [
    "error: No solution found when resolving dependencies",
    "  cause: Because nosuchpackage-zzq was not found in the package registry and you require "
    "nosuchpackage-zzq, we can conclude that your requirements are unsatisfiable.",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(environ={"MODELHOST_HOME": str(tmp_path / "home")})


@pytest.mark.parametrize(
    ("requested", "runtime", "declared", "chosen"),
    [
        (None, "python", True, "isolated"),
        (None, "python", False, "server"),
        ("auto", "python", True, "isolated"),
        ("server", "python", True, "server"),
        ("isolated", "python", True, "isolated"),
        ("sklearn-1.5", "python", False, "sklearn-1.5"),
        (None, "r", False, "r"),
        ("wine-r", "r", False, "wine-r"),  # a named R environment (issue 20, point 6)
    ],
)
def test_the_environment_is_what_was_asked_or_isolated_when_the_project_declares_dependencies(
    requested: str | None, runtime: str, declared: bool, chosen: str
) -> None:
    assert environments.choose(requested, runtime, declared) == chosen


@pytest.mark.parametrize(
    ("requested", "runtime", "message"),
    [
        ("isolated", "python", "needs the project's dependencies"),
        ("r", "python", "only for R scripts"),
        ("isolated", "r", "is for Python scripts"),
        ("server", "r", "is for Python scripts"),
    ],
)
def test_an_environment_that_cannot_work_is_refused_with_what_to_do(
    requested: str, runtime: str, message: str
) -> None:
    with pytest.raises(errors.BadRequest, match=message):
        environments.choose(requested, runtime, declared=False)


def test_requirements_come_from_requirements_txt_first_then_pyproject_dependencies(
    tmp_path: Path,
) -> None:
    assert environments.requirements_of(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "m"\ndependencies = []\n')
    assert environments.requirements_of(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "m"\ndependencies = ["six==1.16.0", "idna>=3"]\n'
    )
    assert environments.requirements_of(tmp_path) == ("pyproject.toml", "six==1.16.0\nidna>=3\n")
    (tmp_path / "requirements.txt").write_text("six\n")
    assert environments.requirements_of(tmp_path) == ("requirements.txt", "six\n")


def test_a_broken_pyproject_is_refused_with_a_way_out(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n")
    with pytest.raises(errors.BadRequest, match=r"not valid TOML.*--environment server"):
        environments.requirements_of(tmp_path)


def test_the_reason_of_a_failed_resolution_is_uvs_line_naming_the_package() -> None:
    assert uvenv.reason(UV_ERROR).startswith("Because nosuchpackage-zzq was not found")
    assert uvenv.reason(["  \u2570\u2500\u25b6 Because x was not found"]).startswith("Because x")
    assert uvenv.reason([]) == "uv failed without saying why"


def test_the_cache_key_depends_on_the_lock_and_the_interpreter_only() -> None:
    python = uvenv.Python(sys.executable, "3.11.7")
    key = uvenv.environment_key("six==1.16.0\n", python)
    assert key == uvenv.environment_key("six==1.16.0\n", python)
    assert key != uvenv.environment_key("six==1.17.0\n", python)
    assert key != uvenv.environment_key("six==1.16.0\n", uvenv.Python(sys.executable, "3.12.1"))


def test_a_python_that_is_not_installed_is_refused_naming_the_servers(
    settings: Settings,
) -> None:
    with pytest.raises(errors.EnvironmentFailed, match=r"no Python 3\.99 on this server"):
        uvenv.find_python(settings, "3.99")
    with pytest.raises(errors.EnvironmentFailed, match="no Python at /nowhere/python"):
        uvenv.find_python(settings, "/nowhere/python")
    found = uvenv.find_python(settings, f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert found.version.startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")


def _lock(settings: Settings, tmp_path: Path, requirements: str) -> str:
    source = tmp_path / "requirements.txt"
    source.write_text(requirements)
    return uvenv.compile_lock(
        settings,
        source,
        uvenv.find_python(settings, None),
        deadline=uvenv.Deadline.after(settings),
        log=lambda _line: None,
        cwd=tmp_path,
    )


def test_a_lock_pins_exact_versions_with_hashes(settings: Settings, tmp_path: Path) -> None:
    lock = _lock(settings, tmp_path, "six==1.16.0\n")
    assert uvenv.pins(lock) == ["six==1.16.0"]
    assert "--hash=sha256:" in lock


def test_an_unknown_package_fails_the_lock_naming_it(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(errors.EnvironmentFailed, match="nosuchpackage-modelhost-zz"):
        _lock(settings, tmp_path, "nosuchpackage-modelhost-zz==1.0\n")


def test_concurrent_builds_of_one_environment_make_it_once_and_agree(
    settings: Settings, tmp_path: Path
) -> None:
    lock = _lock(settings, tmp_path, "six==1.16.0\n")
    python = uvenv.find_python(settings, None)
    results: list[tuple[Path, bool]] = []
    failures: list[BaseException] = []

    def build() -> None:
        try:
            results.append(
                uvenv.ensure_environment(
                    settings,
                    lock,
                    python,
                    deadline=uvenv.Deadline.after(settings),
                    log=lambda _line: None,
                )
            )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len({path for path, _ in results}) == 1
    assert sorted(cached for _, cached in results) == [False, True, True]
    key = uvenv.environment_key(lock, python)
    assert [p.name for p in settings.envs_path.iterdir() if not p.name.startswith(".")] == [key]
    assert list((settings.envs_path / ".tmp").iterdir()) == []


def test_a_build_past_its_deadline_is_killed_and_leaves_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    lock = _lock(settings, tmp_path, "six==1.16.0\n")
    with pytest.raises(errors.EnvironmentFailed, match="environment_build_timeout_seconds"):
        uvenv.ensure_environment(
            settings,
            lock,
            uvenv.find_python(settings, None),
            deadline=uvenv.Deadline(0.0),
            log=lambda _line: None,
        )
    assert [p.name for p in settings.envs_path.iterdir() if not p.name.startswith(".")] == []
    assert list((settings.envs_path / ".tmp").iterdir()) == []


def test_prune_keeps_environments_in_use_and_removes_the_others(
    settings: Settings, tmp_path: Path
) -> None:
    python = uvenv.find_python(settings, None)
    deadline = uvenv.Deadline.after(settings)
    kept, _ = uvenv.ensure_environment(
        settings, _lock(settings, tmp_path, "six==1.16.0\n"), python, deadline=deadline, log=print
    )
    doomed, _ = uvenv.ensure_environment(
        settings, _lock(settings, tmp_path, "six==1.17.0\n"), python, deadline=deadline, log=print
    )
    removed = uvenv.prune(settings, {kept.parent.parent.name})
    assert [key for key, _ in removed] == [doomed.parent.parent.name]
    assert removed[0][1] > 0
    assert kept.exists()
    assert not doomed.parent.parent.exists()


def test_a_requirement_uv_cannot_parse_is_explained_not_reduced_to_its_caret_line() -> None:
    lines = [
        "error: Couldn't parse requirement in `requirements.txt` at position 0",
        "  Caused by: Expected one of `@`, `(`, `<`, `=`, `>`, `~`, `!`, `;`, found `i`",
        "this is not a requirement line !!",
        "^",
    ]
    assert uvenv.reason(lines) == (
        "Couldn't parse requirement in `requirements.txt` at position 0: Expected one of `@`, "
        "`(`, `<`, `=`, `>`, `~`, `!`, `;`, found `i`"
    )
    assert uvenv.reason(["error: x", "  cause: y", "   ^^^^ "]) == "x: y"
