"""``modelhost backup`` and ``modelhost restore`` refusing what they cannot do, each with one
``Error:`` line that says what to do (the round trip through real servers is in
tests/integration/test_backups.py)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from modelhost.cli import cli
from modelhost.crypto import ServerKey
from modelhost.db.engine import make_engine, migrate


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={"MODELHOST_DATABASE_URL": "", **(env or {})})


def _errors(result: Result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def _home(path: Path) -> Path:
    """A data directory as a server leaves it: its database and its server key."""
    engine = make_engine(f"sqlite:///{path / 'modelhost.db'}")
    path.mkdir(parents=True)
    migrate(engine)
    engine.dispose()
    ServerKey(path)
    return path


def _backup(tmp_path: Path, *extra: str) -> Path:
    home = _home(tmp_path / "home")
    made = _run("backup", str(tmp_path / "backup"), "--home", str(home), *extra)
    assert made.exit_code == 0, made.output
    return tmp_path / "backup"


def test_a_backup_into_a_directory_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    home = _home(tmp_path / "home")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    result = _run("backup", str(taken), "--home", str(home))
    assert result.exit_code == 1
    assert _errors(result) == [
        f"Error: {taken} already exists and is not an empty directory; give a new one."
    ]
    assert (taken / "notes.txt").read_text() == "mine"


def test_a_backup_without_the_key_says_so_and_lists_no_key_in_its_manifest(
    tmp_path: Path,
) -> None:
    backup = _backup(tmp_path, "--no-key")
    manifest = json.loads((backup / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["modelhost.db"]
    assert manifest["database"] == "sqlite"
    assert not (backup / "server.key").exists()


def test_a_directory_without_a_manifest_is_not_restored(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    result = _run("restore", str(partial), "--home", str(tmp_path / "new"))
    assert result.exit_code == 1
    assert _errors(result) == [
        f"Error: {partial} is not a complete modelhost backup: it has no manifest.json."
    ]
    assert not (tmp_path / "new" / "modelhost.db").exists()


def test_a_missing_database_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    backup = _backup(tmp_path)
    (backup / "modelhost.db").unlink()
    result = _run("restore", str(backup), "--home", str(tmp_path / "new"))
    assert result.exit_code == 1
    assert _errors(result) == [
        f"Error: The backup in {backup} lacks modelhost.db; it is incomplete."
    ]
    assert not (tmp_path / "new").exists()


def test_a_sqlite_backup_is_not_restored_into_postgresql(tmp_path: Path, postgres_url: str) -> None:
    backup = _backup(tmp_path)
    result = _run(
        "restore",
        str(backup),
        "--home",
        str(tmp_path / "new"),
        env={"MODELHOST_DATABASE_URL": postgres_url},
    )
    assert result.exit_code == 1
    assert _errors(result) == [
        "Error: The backup holds a sqlite database and setting database_url names a postgresql "
        "one; restore into a sqlite database."
    ]


def test_a_restore_into_a_database_that_has_tables_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    home = _home(tmp_path / "home")
    used = make_engine(postgres_url)
    migrate(used)
    used.dispose()
    env = {"MODELHOST_DATABASE_URL": postgres_url}
    made = _run("backup", str(tmp_path / "backup"), "--home", str(home), env=env)
    assert made.exit_code == 0, made.output
    result = _run("restore", str(tmp_path / "backup"), "--home", str(tmp_path / "new"), env=env)
    assert result.exit_code == 1
    [said] = _errors(result)
    assert said.startswith("Error: The database postgresql+psycopg://postgres@")
    assert said.endswith(
        "is not empty; restore into a fresh database (or data directory) so nothing is mixed "
        "or overwritten."
    )
