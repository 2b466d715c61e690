"""Bundles: immutable, content-addressed snapshots of a project's files, on the server.

The client packs a project (:mod:`modelhost.builder.packing`) and uploads it. The server
extracts it member by member with checks, then stores a canonical tar (sorted, no timestamps or
owners) named by its sha256. A version's instances run in a working copy extracted from that
stored bundle.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from modelhost.builder import manifests
from modelhost.builder.packing import IGNORE_FILE, too_large
from modelhost.builder.storage import RemoteBundles
from modelhost.errors import BundleTooLarge, InvalidBundle

_CHUNK = 1 << 20
#: Longest name of one file or directory (bytes; the usual file system limit).
MAX_NAME_BYTES = 255
#: Longest path of an archive member, and deepest nesting (far past any real project, well
#: within what the file system and Python's recursive helpers manage).
MAX_PATH_CHARS = 1024
MAX_DEPTH = 128
#: Bytes an oversized archive is read on for its error message (at least twice the limit).
_SCAN_BUDGET = 1 << 30


@dataclass(frozen=True)
class StoredBundle:
    sha256: str
    path: Path
    files: int
    bytes: int


def _shown(name: str) -> str:
    """A member name for a message: a very long one is cut."""
    return name if len(name) <= 80 else f"{name[:60]}…({len(name)} characters)"


def _safe_member_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    first = path.parts[0] if path.parts else ""
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or ":" in first:
        raise InvalidBundle(
            f"The archive member '{_shown(name)}' has an absolute path; not allowed."
        )
    if any(part == ".." for part in path.parts):
        raise InvalidBundle(
            f"The archive member '{_shown(name)}' points outside the project ('..')."
        )
    parts = [p for p in path.parts if p not in ("", ".")]
    if len(parts) > MAX_DEPTH:
        raise InvalidBundle(
            f"The archive member '{_shown(name)}' is nested {len(parts)} directories deep, "
            f"more than {MAX_DEPTH}; flatten the project or leave it out."
        )
    if len(name) > MAX_PATH_CHARS:
        raise InvalidBundle(
            f"The archive member '{_shown(name)}' has a path longer than {MAX_PATH_CHARS} "
            "characters; shorten it or leave it out."
        )
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise InvalidBundle(
                f"The archive member '{_shown(name)}' has a name longer than {MAX_NAME_BYTES} "
                "bytes, more than a file system allows; shorten it or leave it out."
            )
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


class _Tree:
    """What the archive has made so far at each path, so a member that clashes with an
    earlier one (a file where a directory is, or inside a file) is refused by name."""

    def __init__(self) -> None:
        self._kinds: dict[PurePosixPath, str] = {}

    def add(self, name: str, path: PurePosixPath, kind: str) -> None:
        for parent in reversed(path.parents[:-1]):  # outermost first, without "."
            if self._kinds.get(parent) == "file":
                raise InvalidBundle(
                    f"The archive member '{_shown(name)}' is inside '{parent}', which the "
                    "archive also holds as a file; a path cannot be both. Pack the project "
                    "again with the modelhost CLI or client."
                )
            self._kinds[parent] = "directory"
        earlier = self._kinds.get(path)
        if earlier is not None and earlier != kind:
            raise InvalidBundle(
                f"The archive member '{_shown(name)}' is a {kind}, but the archive also holds "
                f"'{path}' as a {earlier}; a path cannot be both. Pack the project again with "
                "the modelhost CLI or client."
            )
        self._kinds[path] = kind

    def __len__(self) -> int:
        return len(self._kinds)


def extract_archive(
    archive: BinaryIO, dest: Path, *, max_bytes: int, max_files: int
) -> tuple[int, int]:
    """Extract an uploaded tar(.gz) into ``dest`` with checks; returns (files, bytes).

    Files and directories both count toward ``max_files`` (each is an inode on disk)."""
    sizes: list[tuple[str, int]] = []
    total = 0
    tree = _Tree()
    try:
        with tarfile.open(fileobj=archive, mode="r:*") as tar:
            for member in tar:
                path = _safe_member_path(member.name)
                if member.issym() or member.islnk():
                    raise InvalidBundle(
                        f"The archive member '{_shown(member.name)}' is a link; links are not "
                        "allowed. Copy the file into the project instead."
                    )
                if not member.isdir() and not member.isreg():
                    raise InvalidBundle(
                        f"The archive member '{_shown(member.name)}' is a device, pipe or other "
                        "special file; only regular files and directories are allowed."
                    )
                if path == PurePosixPath("."):
                    if member.isdir():
                        continue  # "./": the project directory itself
                    raise InvalidBundle(
                        f"The archive member '{_shown(member.name)}' is a file named like the "
                        "project directory itself; not allowed."
                    )
                tree.add(member.name, path, "directory" if member.isdir() else "file")
                if len(tree) > max_files:
                    raise InvalidBundle(
                        f"The archive holds more than {max_files} files and directories; leave "
                        f"some out with {IGNORE_FILE} or raise the server setting "
                        "max_bundle_files."
                    )
                if member.isdir():
                    (dest / path).mkdir(parents=True, exist_ok=True)
                    continue
                sizes.append((str(path), member.size))
                total += member.size
                if total > max_bytes:
                    raise _too_large_archive(tar, sizes, total, max_bytes, max_files)
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
    """Bundles on the local disk, as ``<root>/<sha256>.tar``; written by rename, never in place.

    With a ``remote`` store (setting ``bundle_store``, :mod:`modelhost.builder.storage`) every
    bundle is also written there, and one missing here is fetched from there: the local
    directory is then a cache. A bundle is checked against its sha256 before each use.
    """

    def __init__(self, root: Path, remote: RemoteBundles | None = None) -> None:
        self.root = root
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.remote = remote

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.tar"

    def exists(self, sha256: str) -> bool:
        """Whether the bundle is here or in the remote store."""
        if self.path(sha256).exists():
            return True
        return self.remote is not None and self.remote.exists(sha256)

    def local(self, sha256: str) -> Path | None:
        """The bundle's file on the local disk, fetched from the remote store if only there
        (and checked then); None when it is in neither."""
        self._fetch(sha256)
        path = self.path(sha256)
        return path if path.exists() else None

    def delete(self, sha256: str) -> None:
        """Forget a bundle no version, run or schedule uses any more, here and remotely."""
        self.path(sha256).unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.delete(sha256)

    def _fetch(self, sha256: str) -> None:
        """Copy a bundle the local disk lacks from the remote store, checked before it is
        renamed into place."""
        source = self.path(sha256)
        if source.exists() or self.remote is None:
            return
        fd, staging = tempfile.mkstemp(dir=self.root, prefix=".fetch-", suffix=".tar")
        os.close(fd)
        try:
            if not self.remote.fetch(sha256, Path(staging)):
                return
            if file_sha256(Path(staging)) != sha256:
                raise InvalidBundle(
                    f"Bundle {sha256[:12]} in {self.remote.url} is damaged (its sha256 does not "
                    "match); publish the project again."
                )
            os.replace(staging, source)
        finally:
            Path(staging).unlink(missing_ok=True)

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
        if self.remote is not None:
            self.remote.put(final, sha)
        return StoredBundle(sha, final, files, total)

    def extract(self, sha256: str, dest: Path) -> None:
        """Extract a verified bundle to ``dest`` (created by rename once complete), with its
        manifest beside it (:mod:`modelhost.builder.manifests`)."""
        self._fetch(sha256)
        source = self.path(sha256)
        if not source.exists():
            where = self.root if self.remote is None else f"{self.root} and {self.remote.url}"
            raise InvalidBundle(f"Bundle {sha256[:12]} is missing from {where}.")
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
            manifests.record(staging, manifests.manifest_path(dest))
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
