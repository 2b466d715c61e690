"""Bundles on the server: what is refused on extraction, and how bundles are stored."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.builder import bundles, packing


def _paths(files: list[packing.ProjectFile]) -> list[str]:
    return [f.path for f in files]


def test_a_symlinked_file_is_snapshotted_by_content(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "shared.txt"
    outside.write_text("shared")
    (project / "linked.txt").symlink_to(outside)
    (project / "dangling").symlink_to(tmp_path / "missing")
    files = packing.collect_files(project)
    assert "linked.txt" in _paths(files)
    assert "dangling" not in _paths(files)
    with packing.pack_project(project, files) as archive:
        out = project.parent / "out"
        bundles.extract_archive(archive, out, max_bytes=10**6, max_files=100)
    assert (out / "linked.txt").read_text() == "shared"
    assert not (out / "linked.txt").is_symlink()


def test_packing_then_extracting_gives_back_the_same_files(project: Path, tmp_path: Path) -> None:
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    files = packing.collect_files(project)
    with packing.pack_project(project, files) as archive:
        count, size = bundles.extract_archive(
            archive, tmp_path / "out", max_bytes=10**6, max_files=100
        )
    assert count == len(files)
    assert size == sum(f.size for f in files)
    assert (tmp_path / "out" / "results" / "model.pkl").read_text() == "weights"
    assert (tmp_path / "out" / "run.sh").stat().st_mode & 0o111


def _tar(*entries: tuple[str, bytes, int]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind  # type: ignore[assignment]
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("name", "kind", "fragment"),
    [
        ("/abs.py", tarfile.REGTYPE, "absolute path"),
        ("a/../../up.py", tarfile.REGTYPE, "outside the project"),
        ("link", tarfile.SYMTYPE, "is a link"),
        ("hard", tarfile.LNKTYPE, "is a link"),
        ("dev", tarfile.CHRTYPE, "device"),
        ("blk", tarfile.BLKTYPE, "device"),
        ("fifo", tarfile.FIFOTYPE, "pipe"),
    ],
)
def test_hostile_members_are_refused_and_nothing_escapes(
    tmp_path: Path, name: str, kind: bytes, fragment: str
) -> None:
    dest = tmp_path / "dest" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(errors.InvalidBundle, match=fragment):
        bundles.extract_archive(_tar((name, b"x", kind)), dest, max_bytes=100, max_files=10)
    assert not (tmp_path / "up.py").exists()
    assert not (tmp_path / "dest" / "up.py").exists()


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([("a" * 300, b"x", tarfile.REGTYPE)], "longer than 255 bytes"),
        ([("a", b"x", tarfile.REGTYPE), ("a/b", b"x", tarfile.REGTYPE)], "inside 'a'"),
        ([("d", b"", tarfile.DIRTYPE), ("d", b"x", tarfile.REGTYPE)], "also holds 'd' as a"),
        ([("d/f", b"x", tarfile.REGTYPE), ("d", b"x", tarfile.REGTYPE)], "also holds 'd' as a"),
        ([("./", b"x", tarfile.REGTYPE)], "named like the project directory"),
        ([("/".join(["d"] * 1500) + "/f", b"x", tarfile.REGTYPE)], "nested 1501 directories"),
        ([("/".join(["d" * 200] * 10), b"x", tarfile.REGTYPE)], "longer than 1024 characters"),
    ],
    ids=[
        "long-name",
        "file-then-inside",
        "dir-then-file",
        "inside-then-file",
        "dot-file",
        "deep",
        "long-path",
    ],
)
def test_malformed_archives_are_refused_with_what_is_wrong(
    tmp_path: Path, entries: list[tuple[str, bytes, bytes]], fragment: str
) -> None:
    with pytest.raises(errors.InvalidBundle, match=fragment):
        bundles.extract_archive(_tar(*entries), tmp_path, max_bytes=10**6, max_files=100)


def test_a_dot_slash_directory_is_the_project_itself_and_is_skipped(tmp_path: Path) -> None:
    archive = _tar(("./", b"", tarfile.DIRTYPE), ("./a.py", b"x", tarfile.REGTYPE))
    assert bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=1) == (1, 1)
    assert (tmp_path / "a.py").read_bytes() == b"x"


def test_directories_count_toward_the_file_limit(tmp_path: Path) -> None:
    archive = _tar(*((f"d{i}", b"", tarfile.DIRTYPE) for i in range(5)))
    with pytest.raises(errors.InvalidBundle, match="more than 3 files and directories"):
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=3)


def test_directories_a_file_is_in_count_toward_the_file_limit(tmp_path: Path) -> None:
    archive = _tar(("a/b/c/f.py", b"x", tarfile.REGTYPE))
    with pytest.raises(errors.InvalidBundle, match="more than 3 files and directories"):
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=3)


def test_too_many_files_are_refused(tmp_path: Path) -> None:
    archive = _tar(*((f"f{i}", b"", tarfile.REGTYPE) for i in range(5)))
    with pytest.raises(errors.InvalidBundle, match="more than 3 files"):
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=3)


def test_the_size_limit_holds_while_streaming_whatever_the_header_claims(tmp_path: Path) -> None:
    archive = _tar(("a", b"x" * 60, tarfile.REGTYPE), ("b", b"y" * 60, tarfile.REGTYPE))
    with pytest.raises(errors.BundleTooLarge, match="a \\(60 B\\)"):
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=10)


def test_identical_trees_share_one_bundle_and_extraction_checks_the_hash(
    tmp_path: Path, project: Path
) -> None:
    store = bundles.BundleStore(tmp_path / "bundles")
    first = store.put_tree(project)
    (project / "results" / "model.pkl").touch()  # a new mtime, same content
    second = store.put_tree(project)
    assert first == second
    assert list((tmp_path / "bundles").iterdir()) == [first.path]

    store.extract(first.sha256, tmp_path / "copy")
    assert (tmp_path / "copy" / "predict.py").read_text().startswith("def predict")

    first.path.write_bytes(first.path.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(errors.InvalidBundle, match="damaged"):
        store.extract(first.sha256, tmp_path / "copy2")
    assert not (tmp_path / "copy2").exists()


def test_two_extractions_of_one_bundle_to_the_same_place_at_once_both_succeed(
    tmp_path: Path, project: Path
) -> None:
    # An environment build and an instance start may extract a version at the same moment.
    store = bundles.BundleStore(tmp_path / "bundles")
    stored = store.put_tree(project)
    dest = tmp_path / "work"
    extract_archive = bundles.extract_archive
    raced: list[bool] = []

    def racing(*args: object, **kwargs: object) -> None:
        extract_archive(*args, **kwargs)  # type: ignore[arg-type]
        if not raced:  # the other one finishes first, between extracting and renaming
            raced.append(True)
            store.extract(stored.sha256, dest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bundles, "extract_archive", racing)
        store.extract(stored.sha256, dest)
    assert (dest / "predict.py").read_text().startswith("def predict")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".work-")] == []


def test_an_oversized_archive_names_the_largest_files_of_the_whole_archive(
    tmp_path: Path,
) -> None:
    archive = _tar(
        ("predict.py", b"x", tarfile.REGTYPE),
        ("zeros.bin", b"0" * 70, tarfile.REGTYPE),
        ("data/small.bin", b"s" * 40, tarfile.REGTYPE),
        ("data/weights.bin", b"w" * 80, tarfile.REGTYPE),
    )
    with pytest.raises(errors.BundleTooLarge) as failure:
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=10)
    assert failure.value.message.startswith("The project is 191 B, over the limit of 100 B.")
    assert (
        "Largest files: data/weights.bin (80 B), zeros.bin (70 B), data/small.bin (40 B), "
        "predict.py (1 B)." in failure.value.message
    )


def test_an_oversized_archive_is_read_on_only_so_far_and_then_says_at_least(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundles, "_SCAN_BUDGET", 0)  # twice the limit, then
    archive = _tar(*((f"f{i}.bin", b"0" * 60, tarfile.REGTYPE) for i in range(10)))
    with pytest.raises(errors.BundleTooLarge, match=r"The project is at least 240 B, over"):
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=50)
    archive = _tar(*((f"f{i}.bin", b"0" * 60, tarfile.REGTYPE) for i in range(10)))
    with pytest.raises(errors.BundleTooLarge, match=r"The project is at least 180 B, over"):
        bundles.extract_archive(archive, tmp_path, max_bytes=100, max_files=3)


def test_exactly_as_many_files_as_the_limit_are_accepted_and_one_more_is_refused(
    tmp_path: Path,
) -> None:
    at_limit = _tar(*((f"f{i}", b"", tarfile.REGTYPE) for i in range(3)))
    bundles.extract_archive(at_limit, tmp_path / "at", max_bytes=100, max_files=3)
    assert sorted(p.name for p in (tmp_path / "at").iterdir()) == ["f0", "f1", "f2"]
    over = _tar(*((f"f{i}", b"", tarfile.REGTYPE) for i in range(4)))
    with pytest.raises(errors.InvalidBundle, match="more than 3 files"):
        bundles.extract_archive(over, tmp_path / "over", max_bytes=100, max_files=3)
