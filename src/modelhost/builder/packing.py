"""Packing a project: the files of a project directory that go into a bundle, as a ``.tar.gz``.

The client side of a bundle (see :mod:`modelhost.builder.bundles` for the server side): the
client and the CLI pack a project directory, minus ``.modelignore`` patterns and ``--exclude``
globs, and upload it. It imports no server module.

>>> files = collect_files(Path("examples/wine_quality"))  # doctest: +SKIP
>>> with pack_project(Path("examples/wine_quality"), files) as archive:  # doctest: +SKIP
...     upload(archive)
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pathspec

from modelhost.errors import BadRequest, BundleTooLarge

IGNORE_FILE = ".modelignore"
#: Always left out of a snapshot: version-control data, caches and local environments.
DEFAULT_IGNORES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    ".ipynb_checkpoints/",
    ".venv/",
    ".DS_Store",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
)


@dataclass(frozen=True)
class ProjectFile:
    path: str  # POSIX path relative to the project root
    source: Path
    size: int


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def count_files(count: int) -> str:
    """``1 file``, ``7 files``."""
    return f"{count} file" if count == 1 else f"{count} files"


def _largest(files: Iterable[tuple[str, int]], count: int = 5) -> str:
    top = sorted(files, key=lambda item: item[1], reverse=True)[:count]
    return ", ".join(f"{name} ({human_size(size)})" for name, size in top)


def too_large(
    files: Sequence[tuple[str, int]], total: int, limit: int, *, complete: bool = True
) -> BundleTooLarge:
    size = human_size(total) if complete else f"at least {human_size(total)}"
    return BundleTooLarge(
        f"The project is {size}, over the limit of {human_size(limit)}. "
        f"Largest files: {_largest(files)}. Leave files out with a {IGNORE_FILE} file or "
        "--exclude GLOB, or raise the server setting max_bundle_bytes."
    )


def check_project_directory(root: Path, *, file_hint: str = "") -> None:
    """BadRequest unless ``root`` is a directory, saying what it is instead."""
    if root.is_dir():
        return
    if root.exists():
        raise BadRequest(
            f"'{root}' is a file, not a project directory; give the directory that holds the "
            f"project, such as {root.parent}{file_hint}."
        )
    raise BadRequest(f"The project directory '{root}' does not exist.")


def _check_patterns(patterns: Sequence[str], where: Callable[[int], str]) -> None:
    """BadRequest naming the pattern and where it came from, for one gitignore cannot read."""
    for index, pattern in enumerate(patterns):
        try:
            pathspec.GitIgnoreSpec.from_lines([pattern])
        except (ValueError, re.error) as exc:
            raise BadRequest(
                f"The pattern '{pattern}' ({where(index)}) is not valid gitignore syntax "
                f"({exc}); fix or remove it."
            ) from None


def ignore_spec(root: Path, excludes: Sequence[str] = ()) -> pathspec.PathSpec:
    if isinstance(excludes, str):  # exclude="data/" from the Python client: one pattern
        excludes = (excludes,)
    patterns = list(DEFAULT_IGNORES)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        try:
            lines = ignore_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BadRequest(
                f"Cannot read {ignore_file} ({exc}); it must be UTF-8 text with one gitignore "
                "pattern per line."
            ) from None
        _check_patterns(lines, lambda i: f"line {i + 1} of {ignore_file}")
        patterns += lines
    _check_patterns(excludes, lambda _i: "--exclude")
    patterns += list(excludes)
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def collect_files(root: Path, excludes: Sequence[str] = ()) -> list[ProjectFile]:
    """Every file of the project that goes into the bundle, sorted by path."""
    spec = ignore_spec(root, excludes)
    found: list[ProjectFile] = []
    for directory, dirnames, filenames in os.walk(root):
        rel_dir = Path(directory).relative_to(root)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not spec.match_file((rel_dir / d).as_posix() + "/")
            and not (Path(directory) / d).is_symlink()
        )
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            source = Path(directory) / name
            if spec.match_file(rel):
                continue
            try:
                info = source.stat()  # follows a symlink to a file: its content is snapshotted
            except OSError:
                continue  # a dangling link
            if stat.S_ISREG(info.st_mode):
                found.append(ProjectFile(rel, source, info.st_size))
    return found


def pack_project(
    root: Path, files: Sequence[ProjectFile], *, max_bytes: int | None = None
) -> BinaryIO:
    """A temporary ``.tar.gz`` of ``files``; the caller closes it."""
    total = sum(f.size for f in files)
    if max_bytes is not None and total > max_bytes:
        raise too_large([(f.path, f.size) for f in files], total, max_bytes)
    archive = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller, who closes it
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=6) as tar:
        for f in files:
            info = tar.gettarinfo(str(f.source), arcname=f.path)
            info.type = tarfile.REGTYPE
            info.size = f.size
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with f.source.open("rb") as handle:
                tar.addfile(info, handle)
    archive.seek(0)
    return archive
