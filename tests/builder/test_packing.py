"""Packing a project: what goes in, what is left out, and what is too large."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost import errors
from modelhost.builder import packing


def _paths(files: list[packing.ProjectFile]) -> list[str]:
    return [f.path for f in files]


def test_modelignore_defaults_and_excludes_leave_files_out(project: Path) -> None:
    assert _paths(packing.collect_files(project)) == [
        ".modelignore",
        "predict.py",
        "results/model.pkl",
        "sub/keep.txt",
    ]
    assert _paths(packing.collect_files(project, ["sub/", "*.pkl"])) == [
        ".modelignore",
        "predict.py",
    ]


def test_an_oversized_project_names_its_largest_files(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "a.bin").write_bytes(b"0" * 3000)
    (root / "b.bin").write_bytes(b"0" * 2000)
    (root / "c.py").write_text("x")
    with pytest.raises(errors.BundleTooLarge) as failure:
        packing.pack_project(root, packing.collect_files(root), max_bytes=4000)
    assert "Largest files: a.bin (3.0 KB), b.bin (2.0 KB), c.py (1 B)" in failure.value.message


@pytest.mark.parametrize(
    ("ignore_text", "excludes", "fragment"),
    [
        ("*.csv\n**/\\\n", (), "The pattern '**/\\' (line 2 of "),
        ("[z-a]\n", (), "The pattern '[z-a]' (line 1 of "),
        ("", ("!",), "The pattern '!' (--exclude) is not valid gitignore syntax"),
    ],
)
def test_an_invalid_ignore_pattern_is_named_with_where_it_came_from(
    project: Path, ignore_text: str, excludes: tuple[str, ...], fragment: str
) -> None:
    (project / ".modelignore").write_text(ignore_text)
    with pytest.raises(errors.BadRequest) as refused:
        packing.collect_files(project, excludes)
    assert fragment in refused.value.message


def test_a_modelignore_that_is_not_utf8_is_named(project: Path) -> None:
    (project / ".modelignore").write_bytes(b"\xff\xfe*.csv\n")
    with pytest.raises(errors.BadRequest, match=r"\.modelignore .*it must be UTF-8 text"):
        packing.collect_files(project)


def test_one_exclude_given_as_a_string_is_one_pattern_not_one_per_character(
    project: Path,
) -> None:
    # Client.publish(..., exclude="results/") must not become "r", "e", ..., "/" (and "*.pkl"
    # must not become "*", which left nothing to publish).
    assert _paths(packing.collect_files(project, "results/")) == _paths(
        packing.collect_files(project, ["results/"])
    )
    assert "predict.py" in _paths(packing.collect_files(project, "*.pkl"))


def test_file_counts_read_as_english() -> None:
    assert [packing.count_files(n) for n in (0, 1, 2)] == ["0 files", "1 file", "2 files"]


# The default ignores as docs/cli.md lists them, each with files it must leave out, at the top of
# the project and deeper in it.
DOCUMENTED_DEFAULT_IGNORES = {
    ".git/": ["objects/ab/cdef"],
    ".hg/": ["store/data"],
    ".svn/": ["entries"],
    "__pycache__/": ["predict.cpython-311.pyc"],
    ".ipynb_checkpoints/": ["notes-checkpoint.ipynb"],
    ".venv/": ["bin/python", "lib/python3.11/site-packages/six.py"],
    ".mypy_cache/": ["3.11/predict.meta.json"],
    ".pytest_cache/": ["v/cache/nodeids"],
    ".ruff_cache/": ["0.6.0/123"],
}


@pytest.mark.parametrize("directory", sorted(DOCUMENTED_DEFAULT_IGNORES))
def test_every_documented_default_ignore_leaves_its_directory_out_anywhere(
    tmp_path: Path, directory: str
) -> None:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "predict.py").write_text("def predict(x):\n    return x\n")
    for base in (root, root / "pkg"):
        for inner in DOCUMENTED_DEFAULT_IGNORES[directory]:
            path = base / directory / inner
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("left out")
    assert _paths(packing.collect_files(root)) == ["predict.py"]


@pytest.mark.parametrize("name", ["stale.pyc", "pkg/old.pyc", ".DS_Store", "pkg/.DS_Store"])
def test_compiled_python_and_finder_files_are_left_out_anywhere(tmp_path: Path, name: str) -> None:
    root = tmp_path / "project"
    (root / "pkg").mkdir(parents=True)
    (root / "predict.py").write_text("def predict(x):\n    return x\n")
    (root / name).write_text("left out")
    assert _paths(packing.collect_files(root)) == ["predict.py"]
