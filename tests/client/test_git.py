"""Which repository and ref a ``git+URL@REF`` target names, and what is recorded of it."""

from __future__ import annotations

import pytest

from modelhost import errors
from modelhost.client import _git


@pytest.mark.parametrize(
    ("target", "url", "ref"),
    [
        ("git+file:///srv/repo@v1", "file:///srv/repo", "v1"),
        ("git+file:///srv/repo", "file:///srv/repo", None),
        ("git+https://host/o/r.git@feature/x", "https://host/o/r.git", "feature/x"),
        ("git+ssh://git@host/o/r.git", "ssh://git@host/o/r.git", None),
        ("git+ssh://git@host/o/r.git@main", "ssh://git@host/o/r.git", "main"),
    ],
)
def test_the_ref_is_what_follows_the_last_at_in_the_path(
    target: str, url: str, ref: str | None
) -> None:
    assert _git.split(target) == (url, ref)


def test_an_empty_ref_is_refused_with_what_to_give() -> None:
    with pytest.raises(errors.BadRequest, match="no ref; give a branch, tag or commit"):
        _git.split("git+file:///srv/repo@")


def test_a_password_in_the_url_is_never_recorded() -> None:
    recorded = _git._public("https://me:secret@host/o/r.git", "v1")
    assert recorded == "git+https://host/o/r.git@v1"
