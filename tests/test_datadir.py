"""The data directory's top level is closed to other users."""

from __future__ import annotations

import stat
from pathlib import Path

from modelhost import datadir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_loose_data_directory_and_its_known_entries_are_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    for name in ("modelhost.db", "server.key", "credentials"):
        (home / name).write_text("x")
        (home / name).chmod(0o644)
    for name in ("logs", "runs", "work", "bundles", "envs", "tmp"):
        (home / name).mkdir()
        (home / name).chmod(0o755)

    changed = datadir.make_private(home)

    assert _mode(home) == 0o700
    for name in ("modelhost.db", "server.key", "credentials"):
        assert _mode(home / name) == 0o600, name
    for name in ("logs", "runs", "work", "bundles", "envs", "tmp"):
        assert _mode(home / name) == 0o700, name
    files = ["modelhost.db", "server.key", "credentials"]
    directories = ["logs", "runs", "work", "bundles", "envs", "tmp"]
    assert sorted(changed) == sorted([".", *files, *directories])


def test_a_private_data_directory_is_left_as_it_is_and_nothing_is_reported(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "logs").mkdir(mode=0o700)
    (home / "credentials").write_text("x")
    (home / "credentials").chmod(0o600)
    assert datadir.make_private(home) == []


def test_what_is_inside_a_top_level_directory_and_unknown_entries_are_not_touched(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    (home / "work" / "v1").mkdir(parents=True)
    (home / "work" / "v1").chmod(0o755)
    (home / "mine.txt").write_text("x")
    (home / "mine.txt").chmod(0o644)
    datadir.make_private(home)
    assert _mode(home / "work" / "v1") == 0o755
    assert _mode(home / "mine.txt") == 0o644


def test_a_symbolic_link_in_the_data_directory_is_not_followed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "shared-logs"
    elsewhere.mkdir(mode=0o755)
    elsewhere.chmod(0o755)
    (home / "logs").symlink_to(elsewhere)
    assert "logs" not in datadir.make_private(home)
    assert _mode(elsewhere) == 0o755
