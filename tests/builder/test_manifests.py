"""A working copy's manifest: written at extraction, and every kind of difference found."""

from __future__ import annotations

from pathlib import Path

from modelhost.builder import manifests


def _copy(tmp_path: Path) -> Path:
    copy = tmp_path / "work" / "v1"
    (copy / "pkg").mkdir(parents=True)
    (copy / "predict.py").write_text("def predict(x):\n    return x\n")
    (copy / "pkg" / "model.bin").write_bytes(b"\x00" * 100)
    manifests.record(copy, manifests.manifest_path(copy))
    return copy


def test_a_copy_as_extracted_has_no_differences_and_its_manifest_sits_beside_it(
    tmp_path: Path,
) -> None:
    copy = _copy(tmp_path)
    assert manifests.differences(copy) == []
    assert manifests.manifest_path(copy).parent == copy.parent
    assert not (copy / "v1.manifest.json").exists()


def test_an_edit_of_the_same_size_is_found_by_its_hash(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "predict.py").write_text("def predict(x):\n    return 1\n")
    assert manifests.differences(copy) == ["changed predict.py"]


def test_missing_and_added_files_are_named(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "pkg" / "model.bin").unlink()
    (copy / "sitecustomize.py").write_text("import os\n")
    assert manifests.differences(copy) == ["missing pkg/model.bin", "added sitecustomize.py"]


def test_a_copy_without_a_manifest_cannot_be_vouched_for(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    manifests.manifest_path(copy).unlink()
    assert manifests.differences(copy) == ["no manifest"]


def test_many_differences_are_summed_up(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    for index in range(8):
        (copy / f"extra{index}.py").write_text("")
    said = manifests.differences(copy, limit=5)
    assert len(said) == 6
    assert said[-1] == "3 more"
