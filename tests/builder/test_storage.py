"""Bundles in a shared store (setting bundle_store): written through, fetched back, verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost import errors
from modelhost.builder.bundles import BundleStore
from modelhost.builder.storage import RemoteBundles


def _project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "predict.py").write_text("def predict(x):\n    return x\n")
    (root / "pkg" / "data.txt").write_text("weights\n")
    return root


def test_a_bundle_stored_on_one_server_is_fetched_and_extracted_by_another(
    tmp_path: Path,
) -> None:
    shared = RemoteBundles(str(tmp_path / "nfs" / "bundles"))
    first = BundleStore(tmp_path / "a" / "bundles", shared)
    stored = first.put_tree(_project(tmp_path / "project"))
    assert (tmp_path / "nfs" / "bundles" / f"{stored.sha256}.tar").is_file()

    second = BundleStore(
        tmp_path / "b" / "bundles", RemoteBundles(f"file://{tmp_path}/nfs/bundles")
    )
    assert second.exists(stored.sha256)
    second.extract(stored.sha256, tmp_path / "b" / "work")
    assert (tmp_path / "b" / "work" / "pkg" / "data.txt").read_text() == "weights\n"
    assert second.path(stored.sha256).is_file()  # kept in the local cache


def test_a_damaged_copy_in_the_store_is_refused_and_never_extracted(tmp_path: Path) -> None:
    shared = RemoteBundles(str(tmp_path / "nfs"))
    stored = BundleStore(tmp_path / "a", shared).put_tree(_project(tmp_path / "project"))
    copy = tmp_path / "nfs" / f"{stored.sha256}.tar"
    copy.write_bytes(copy.read_bytes()[:-512] + b"\0" * 511 + b"x")
    second = BundleStore(tmp_path / "b", shared)
    with pytest.raises(errors.InvalidBundle) as refused:
        second.extract(stored.sha256, tmp_path / "b-work")
    assert "is damaged (its sha256 does not match)" in refused.value.message
    assert not (tmp_path / "b-work").exists()
    assert not second.path(stored.sha256).exists()


def test_a_bundle_missing_everywhere_names_both_places(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "a", RemoteBundles(str(tmp_path / "nfs")))
    with pytest.raises(errors.InvalidBundle) as missing:
        store.extract("0" * 64, tmp_path / "work")
    assert str(tmp_path / "nfs") in missing.value.message


def test_deleting_a_bundle_removes_it_from_the_cache_and_the_store(tmp_path: Path) -> None:
    store = BundleStore(tmp_path / "a", RemoteBundles(str(tmp_path / "nfs")))
    stored = store.put_tree(_project(tmp_path / "project"))
    store.delete(stored.sha256)
    assert not store.exists(stored.sha256)
    assert list((tmp_path / "nfs").iterdir()) == []


def test_a_store_that_cannot_be_opened_is_a_setting_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidSetting) as refused:
        RemoteBundles("nosuchprotocol://bucket/bundles")
    assert "bundle_store 'nosuchprotocol://bucket/bundles' cannot be opened" in (
        refused.value.message
    )
