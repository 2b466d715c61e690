"""Leftovers of interrupted work: every staging place is swept, old ones only while running,
and nothing that is in place (a bundle, a working copy, an environment) is ever touched."""

from __future__ import annotations

import os
from pathlib import Path

from modelhost.housekeeping import sweep

NOW = 1_800_000_000.0
HOUR = 3600.0


def _make(path: Path, *, age: float, folder: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "inside.txt").write_text("x")
    else:
        path.write_text("x")
    os.utime(path, (NOW - age, NOW - age))
    return path


def _home(tmp_path: Path, age: float) -> tuple[list[Path], list[Path]]:
    """(leftovers, things in place), all last changed ``age`` seconds ago."""
    leftovers = [
        _make(tmp_path / "tmp" / "publish-abc", age=age, folder=True),
        _make(tmp_path / "tmp" / "requirements-v1.txt", age=age),
        _make(tmp_path / "bundles" / ".staging-x.tar", age=age),
        _make(tmp_path / "work" / ".v1-abcd", age=age, folder=True),
        _make(tmp_path / "envs" / ".tmp" / "key-1234", age=age, folder=True),
    ]
    kept = [
        _make(tmp_path / "bundles" / f"{'a' * 64}.tar", age=age),
        _make(tmp_path / "work" / "v1", age=age, folder=True),
        _make(tmp_path / "envs" / "key", age=age, folder=True),
        _make(tmp_path / "server.key", age=age),
        _make(tmp_path / "modelhost.db", age=age),
    ]
    return leftovers, kept


def test_at_start_up_every_leftover_goes_and_everything_in_place_stays(tmp_path: Path) -> None:
    leftovers, kept = _home(tmp_path, age=5)
    removed = sweep(tmp_path, clock=lambda: NOW)
    assert sorted(removed) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)


def test_while_running_only_leftovers_older_than_an_hour_go(tmp_path: Path) -> None:
    old, kept = _home(tmp_path / "old", age=HOUR + 60)
    young, _ = _home(tmp_path / "young", age=HOUR - 60)
    sweep(tmp_path / "old", older_than=HOUR, clock=lambda: NOW)
    sweep(tmp_path / "young", older_than=HOUR, clock=lambda: NOW)
    assert not any(p.exists() for p in old)
    assert all(p.exists() for p in young)  # may belong to a publish still going on
    assert all(p.exists() for p in kept)


def test_an_empty_or_new_data_directory_is_fine(tmp_path: Path) -> None:
    assert sweep(tmp_path / "nothing-here") == []
