"""Property tests of the archive member checks: whatever name an uploaded archive gives a
member, what is accepted lands inside the project, and what could escape it is refused with
a message that names it."""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelhost import errors
from modelhost.builder import bundles

PART = st.one_of(
    st.sampled_from(["..", ".", "", "a", "sub", "C:", "x:y", "~", "\\", "..."]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00/"), max_size=12),
)
NAMES = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "", "", "/", "./", "../", "\\"]),
    st.lists(PART, min_size=1, max_size=8),
)


@given(NAMES)
def test_an_accepted_member_name_always_stays_inside_the_project(name: str) -> None:
    try:
        path = bundles._safe_member_path(name)
    except errors.InvalidBundle as refused:
        message = str(refused)  # refused with a message naming the member, nothing else
        assert "The archive member" in message
        return
    root = "/project"
    joined = os.path.normpath(os.path.join(root, str(path)))
    assert joined == root or joined.startswith(root + "/")
    assert ".." not in path.parts
    assert not path.is_absolute()


@given(NAMES)
def test_a_member_name_that_climbs_out_or_is_absolute_is_always_refused(name: str) -> None:
    parts = PurePosixPath(name).parts
    if ".." in parts or name.startswith(("/", "\\")):
        with pytest.raises(errors.InvalidBundle, match=r"absolute path|outside the project"):
            bundles._safe_member_path(name)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40)
@given(st.lists(NAMES, min_size=1, max_size=4))
def test_extracting_any_archive_writes_nothing_outside_the_destination(
    tmp_path: Path, names: list[str]
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for index, name in enumerate(names):
            info = tarfile.TarInfo(name)
            data = f"file {index}".encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    case = Path(tempfile.mkdtemp(dir=tmp_path))
    destination = case / "project"
    destination.mkdir()
    buffer.seek(0)
    try:
        bundles.extract_archive(buffer, destination, max_bytes=10_000, max_files=100)
    except errors.ModelhostError as refused:
        message = str(refused)
        assert message.startswith("The archive")
    # Only the destination was written to, whatever happened.
    assert [p.name for p in case.iterdir()] == ["project"]
