"""Bundle extraction and storage at their edges: each documented limit at and past its value
(docs/api.md, ``invalid_bundle``), what each refusal tells the user to do, the modes files get,
and where a bundle being written or extracted sits (the places housekeeping.LEFTOVERS clears)."""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from modelhost import errors, housekeeping
from modelhost.builder import bundles


def _tar(*entries: tuple[str, bytes, bytes], mode: int = 0o644) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind  # type: ignore[assignment]
            info.mode = mode
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes = b"x") -> tuple[str, bytes, bytes]:
    return (name, data, tarfile.REGTYPE)


def _dir(name: str) -> tuple[str, bytes, bytes]:
    return (name, b"", tarfile.DIRTYPE)


def _extract(archive: io.BytesIO, dest: Path, max_bytes: int = 10**6) -> tuple[int, int]:
    return bundles.extract_archive(archive, dest, max_bytes=max_bytes, max_files=1000)


def _refusal(archive: io.BytesIO, dest: Path) -> str:
    with pytest.raises(errors.InvalidBundle) as refused:
        _extract(archive, dest)
    return refused.value.message


# The documented limits: a name of 255 bytes, a path of 1024 characters, 128 directories deep.
NAME_255 = "n" * 255
PATH_1024 = "/".join(["p" * 250] * 4) + "/" + "f" * 20
DEEP_128 = "/".join(["d"] * 127) + "/f"


@pytest.mark.parametrize("name", [NAME_255, PATH_1024, DEEP_128], ids=["name", "path", "depth"])
def test_a_member_exactly_at_a_limit_is_accepted(tmp_path: Path, name: str) -> None:
    assert len(name.encode()) <= 1024
    assert _extract(_tar(_file(name)), tmp_path) == (1, 1)
    assert (tmp_path / name).read_bytes() == b"x"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        (NAME_255 + "n", "has a name longer than 255 bytes, more than a file system allows; "),
        (PATH_1024 + "f", "has a path longer than 1024 characters; shorten it or leave it out."),
        ("d/" + DEEP_128, "is nested 129 directories deep, more than 128; flatten the project"),
    ],
    ids=["name", "path", "depth"],
)
def test_a_member_one_past_a_limit_is_refused_saying_which_and_what_to_do(
    tmp_path: Path, name: str, fragment: str
) -> None:
    assert fragment in _refusal(_tar(_file(name)), tmp_path)


def test_a_long_member_name_is_cut_in_messages_and_one_of_80_characters_is_not(
    tmp_path: Path,
) -> None:
    long = "L" * 81 + "/../x"  # 86 characters: its first 60 and its length
    message = _refusal(_tar(_file(long)), tmp_path)
    assert f"'{'L' * 60}…(86 characters)' points outside the project ('..')." in message
    message = _refusal(_tar(_file("a" * 76 + "/../x")), tmp_path)  # 81 characters: cut
    assert f"'{'a' * 60}…(81 characters)'" in message
    exact = "b" * 75 + "/../x"  # 80 characters: shown whole
    assert f"'{exact}' points outside" in _refusal(_tar(_file(exact)), tmp_path)


@pytest.mark.parametrize("name", ["C:/evil.py", "c:evil.py", "/abs.py", "\\\\server\\share.py"])
def test_a_drive_or_absolute_path_is_refused_as_absolute(tmp_path: Path, name: str) -> None:
    assert "has an absolute path; not allowed." in _refusal(_tar(_file(name)), tmp_path)


def test_links_and_special_files_are_refused_saying_what_to_do(tmp_path: Path) -> None:
    link = _refusal(_tar(("l", b"", tarfile.SYMTYPE)), tmp_path)
    assert link == (
        "The archive member 'l' is a link; links are not allowed. Copy the file into the "
        "project instead."
    )
    fifo = _refusal(_tar(("p", b"", tarfile.FIFOTYPE)), tmp_path)
    assert fifo.endswith("special file; only regular files and directories are allowed.")


def test_a_path_held_as_file_and_directory_is_refused_saying_to_pack_again(tmp_path: Path) -> None:
    inside = _refusal(_tar(_file("a"), _file("a/b")), tmp_path / "1")
    assert inside.endswith(
        "archive also holds as a file; a path cannot be both. Pack the project again with the "
        "modelhost CLI or client."
    )
    both = _refusal(_tar(_dir("d"), _file("d")), tmp_path / "2")
    assert both.endswith(
        "a path cannot be both. Pack the project again with the modelhost CLI or client."
    )


def test_a_directory_listed_after_its_files_or_twice_is_accepted(tmp_path: Path) -> None:
    archive = _tar(_file("d/f"), _dir("d"), _dir("d"), _dir("x/y/z"), _file("x/y/z/g"))
    assert _extract(archive, tmp_path) == (2, 2)
    assert (tmp_path / "d" / "f").is_file()
    assert (tmp_path / "x" / "y" / "z" / "g").is_file()


def test_too_many_files_says_how_to_leave_some_out_or_raise_the_setting(tmp_path: Path) -> None:
    archive = _tar(_file("a"), _file("b"))
    with pytest.raises(errors.InvalidBundle) as refused:
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=1)
    assert refused.value.message == (
        "The archive holds more than 1 files and directories; leave some out with .modelignore "
        "or raise the server setting max_bundle_files."
    )


def test_exactly_the_size_limit_is_accepted(tmp_path: Path) -> None:
    assert _extract(_tar(_file("a", b"x" * 60), _file("b", b"y" * 40)), tmp_path, 100) == (2, 100)


def test_an_unreadable_upload_says_to_publish_with_the_cli_or_client(tmp_path: Path) -> None:
    message = _refusal(io.BytesIO(b"not an archive at all"), tmp_path)
    assert message.startswith("The upload is not a readable .tar.gz archive (")
    assert message.endswith(
        "). Publish with the modelhost CLI or client, which packs the project for you."
    )


def test_an_oversized_archive_cut_short_is_at_least_what_was_read(tmp_path: Path) -> None:
    noise = [os.urandom(400) for _ in range(10)]  # incompressible, so a cut lands in the data
    whole = gzip.compress(_tar(*(_file(f"f{i}.bin", n) for i, n in enumerate(noise))).getvalue())
    cut = io.BytesIO(whole[: len(whole) * 2 // 3])  # over 500 B after two files, cut after six
    with pytest.raises(errors.BundleTooLarge, match=r"^The project is at least [\d.]+ KB, over"):
        _extract(cut, tmp_path, 500)


def test_an_oversized_archive_is_read_on_to_twice_the_limit_inclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "_SCAN_BUDGET", 0)  # twice the limit: 200 B
    archive = _tar(*(_file(f"f{i}.bin", b"0" * 50) for i in range(10)))
    # over the limit at 150 B; read on while at most 200 B are counted: 200, then 250, stop
    with pytest.raises(errors.BundleTooLarge, match=r"^The project is at least 250 B, over"):
        _extract(archive, tmp_path, 100)


@pytest.mark.parametrize(
    ("mode", "given"),
    [(0o744, 0o755), (0o654, 0o755), (0o645, 0o755), (0o666, 0o644), (0o600, 0o644)],
)
def test_an_extracted_file_is_executable_for_all_or_for_none(
    tmp_path: Path, mode: int, given: int
) -> None:
    _extract(_tar(_file("run.sh"), mode=mode), tmp_path)
    assert (tmp_path / "run.sh").stat().st_mode & 0o777 == given


def _project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "predict.py").write_text("def predict(x):\n    return x\n")
    (root / "pkg" / "data.bin").write_bytes(b"0123456789")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o700)
    (root / "pkg" / "tool").write_text("#!/bin/sh\n")
    (root / "pkg" / "tool").chmod(0o601)  # executable for others only
    return root


def test_a_stored_bundle_counts_its_files_and_bytes_and_keeps_only_the_execute_bit(
    tmp_path: Path,
) -> None:
    project = _project(tmp_path / "project")
    (project / "predict.py").chmod(0o600)
    stored = bundles.BundleStore(tmp_path / "a" / "b" / "bundles").put_tree(project)
    sizes = [p.stat().st_size for p in project.rglob("*") if p.is_file()]
    assert (stored.files, stored.bytes) == (len(sizes), sum(sizes)) == (4, 59)
    with tarfile.open(stored.path) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes == {
        "pkg/data.bin": 0o644,
        "pkg/tool": 0o755,
        "predict.py": 0o644,
        "run.sh": 0o755,
    }


def test_the_bundle_store_is_private_to_the_server_and_opens_twice(tmp_path: Path) -> None:
    bundles.BundleStore(tmp_path / "home" / "bundles")
    store = bundles.BundleStore(tmp_path / "home" / "bundles")
    assert store.root.stat().st_mode & 0o777 == 0o700


def test_a_bundle_being_written_is_a_staging_file_housekeeping_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    store = bundles.BundleStore(home / "bundles")
    canonical_tar = bundles._canonical_tar
    seen: list[str] = []

    def watched(root: Path, out: io.BufferedWriter) -> tuple[int, int]:
        seen.extend(p.relative_to(home).as_posix() for p in store.root.iterdir())
        return canonical_tar(root, out)

    monkeypatch.setattr(bundles, "_canonical_tar", watched)
    store.put_tree(_project(tmp_path / "project"))
    assert len(seen) == 1
    assert any(fnmatch.fnmatch(seen[0], pattern) for pattern in housekeeping.LEFTOVERS)


def test_a_bundle_that_fails_to_be_written_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = bundles.BundleStore(tmp_path / "bundles")

    def failing(root: Path, out: io.BufferedWriter) -> tuple[int, int]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundles, "_canonical_tar", failing)
    with pytest.raises(OSError, match="No space left"):
        store.put_tree(_project(tmp_path / "project"))
    assert list(store.root.iterdir()) == []


def test_a_missing_or_damaged_bundle_is_named_by_its_first_twelve_characters(
    tmp_path: Path,
) -> None:
    store = bundles.BundleStore(tmp_path / "bundles")
    sha = "0123456789abcdef" * 4
    with pytest.raises(errors.InvalidBundle) as missing:
        store.extract(sha, tmp_path / "copy")
    assert missing.value.message == f"Bundle 0123456789ab is missing from {store.root}."
    stored = store.put_tree(_project(tmp_path / "project"))
    stored.path.write_bytes(stored.path.read_bytes() + b"\0")
    with pytest.raises(errors.InvalidBundle) as damaged:
        store.extract(stored.sha256, tmp_path / "copy")
    assert damaged.value.message == (
        f"Bundle {stored.sha256[:12]} in {store.root} is damaged (its sha256 no longer matches); "
        "publish the project again."
    )


def test_a_working_copy_being_extracted_is_a_hidden_folder_beside_it_and_a_failure_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    store = bundles.BundleStore(home / "bundles")
    stored = store.put_tree(_project(tmp_path / "project"))
    dest = home / "work" / "v1"  # home/work does not exist yet
    extract_archive = bundles.extract_archive
    seen: list[str] = []

    def watched(archive: io.BufferedReader, into: Path, **limits: int) -> tuple[int, int]:
        seen.append(into.relative_to(tmp_path).as_posix().removeprefix("home/"))
        return extract_archive(archive, into, **limits)

    monkeypatch.setattr(bundles, "extract_archive", watched)
    store.extract(stored.sha256, dest)
    assert seen[0].startswith("work/.v1-")
    assert any(fnmatch.fnmatch(seen[0], pattern) for pattern in housekeeping.LEFTOVERS)
    assert (dest / "pkg" / "data.bin").read_bytes() == b"0123456789"
    store.extract(stored.sha256, tmp_path / "a" / "b" / "copy")  # its parents are made
    assert (tmp_path / "a" / "b" / "copy" / "predict.py").is_file()

    def failing(archive: io.BufferedReader, into: Path, **limits: int) -> tuple[int, int]:
        raise errors.InvalidBundle("the disk broke")

    monkeypatch.setattr(bundles, "extract_archive", failing)
    with pytest.raises(errors.InvalidBundle, match="the disk broke"):
        store.extract(stored.sha256, home / "work" / "v2")
    assert sorted(p.name for p in (home / "work").iterdir()) == ["v1", "v1.manifest.json"]
