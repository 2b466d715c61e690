"""Bundles: immutable, content-addressed snapshots of a project's files.

The client packs a project directory into a ``.tar.gz`` (minus ``.modelignore`` patterns and
``--exclude`` globs) and uploads it. The server extracts it member by member with checks, then
stores a canonical tar (sorted, no timestamps or owners) named by its sha256. A version's
instances run in a working copy extracted from that stored bundle.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pathspec

from modelhost.errors import BadRequest, BundleTooLarge, InvalidBundle

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
_CHUNK = 1 << 20
#: Bytes an oversized archive is read on for its error message (at least twice the limit).
_SCAN_BUDGET = 1 << 30


@dataclass(frozen=True)
class ProjectFile:
    path: str  # POSIX path relative to the project root
    source: Path
    size: int


@dataclass(frozen=True)
class StoredBundle:
    sha256: str
    path: Path
    files: int
    bytes: int


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


# --------------------------------------------------------------------------- client side


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


# --------------------------------------------------------------------------- server side


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    first = path.parts[0] if path.parts else ""
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or ":" in first:
        raise InvalidBundle(f"The archive member '{name}' has an absolute path; not allowed.")
    if any(part == ".." for part in path.parts):
        raise InvalidBundle(f"The archive member '{name}' points outside the project ('..').")
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def extract_archive(
    archive: BinaryIO, dest: Path, *, max_bytes: int, max_files: int
) -> tuple[int, int]:
    """Extract an uploaded tar(.gz) into ``dest`` with checks; returns (files, bytes)."""
    sizes: list[tuple[str, int]] = []
    total = 0
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            for member in tar:
                path = _safe_member_path(member.name)
                if member.issym() or member.islnk():
                    raise InvalidBundle(
                        f"The archive member '{member.name}' is a link; links are not allowed. "
                        "Copy the file into the project instead."
                    )
                if member.isdir():
                    (dest / path).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    raise InvalidBundle(
                        f"The archive member '{member.name}' is a device, pipe or other special "
                        "file; only regular files and directories are allowed."
                    )
                sizes.append((str(path), member.size))
                total += member.size
                if total > max_bytes:
                    raise _too_large_archive(tar, sizes, total, max_bytes, max_files)
                if len(sizes) > max_files:
                    raise InvalidBundle(
                        f"The archive holds more than {max_files} files; leave some out with "
                        f"{IGNORE_FILE} or raise the server setting max_bundle_files."
                    )
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                target.chmod(0o755 if member.mode & 0o111 else 0o644)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidBundle(
            f"The upload is not a readable .tar.gz archive ({exc}). Publish with the modelhost "
            "CLI or client, which packs the project for you."
        ) from None
    return len(sizes), total


def _too_large_archive(
    tar: tarfile.TarFile, sizes: list[tuple[str, int]], total: int, limit: int, max_files: int
) -> BundleTooLarge:
    """The error for an archive past the limit, naming the largest files of the whole archive,
    not only of the part read so far. The rest is read header by header without extracting,
    within a budget (a compressed upload may expand without end) and ``max_files``."""
    budget = max(2 * limit, _SCAN_BUDGET)
    complete = True
    try:
        while (member := tar.next()) is not None:  # iter(tar) would start again at the top
            if total > budget or len(sizes) >= max_files:
                complete = False
                break
            if member.isreg():
                sizes.append((member.name, member.size))
                total += member.size
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile):
        complete = False
    return too_large(sizes, total, limit, complete=complete)


def _canonical_tar(root: Path, out: BinaryIO) -> tuple[int, int]:
    files = 0
    total = 0
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = path.relative_to(root).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
            files += 1
            total += info.size
    return files, total


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class BundleStore:
    """Bundles on the local disk, as ``<root>/<sha256>.tar``; written by rename, never in place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.tar"

    def put_tree(self, tree: Path) -> StoredBundle:
        """Store the files under ``tree`` as a canonical tar; identical trees share one bundle."""
        fd, staging = tempfile.mkstemp(dir=self.root, prefix=".staging-", suffix=".tar")
        try:
            with os.fdopen(fd, "wb") as out:
                files, total = _canonical_tar(tree, out)
            sha = file_sha256(Path(staging))
            final = self.path(sha)
            if final.exists():
                os.unlink(staging)
            else:
                os.replace(staging, final)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        return StoredBundle(sha, final, files, total)

    def extract(self, sha256: str, dest: Path) -> None:
        """Extract a verified bundle to ``dest`` (created by rename once complete)."""
        source = self.path(sha256)
        if not source.exists():
            raise InvalidBundle(f"Bundle {sha256[:12]} is missing from {self.root}.")
        if file_sha256(source) != sha256:
            raise InvalidBundle(
                f"Bundle {sha256[:12]} in {self.root} is damaged (its sha256 no longer matches); "
                "publish the project again."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
        try:
            with source.open("rb") as handle:
                extract_archive(handle, staging, max_bytes=1 << 62, max_files=1 << 31)
            try:
                os.replace(staging, dest)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not dest.is_dir():
                    raise
                # Extracted by someone else meanwhile (an environment build and an instance
                # start of the same version): the same verified bundle, so theirs will do.
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
