"""Which repository and ref a ``git+URL@REF`` target names, and what is recorded of it."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(
    ("url", "recorded"),
    [
        ("https://ghp_TOKEN@host/o/r.git", "git+https://host/o/r.git@v1"),
        ("https://me:secret@host/o/r.git", "git+https://host/o/r.git@v1"),
        ("https://me:p@ss@host/o/r.git", "git+https://host/o/r.git@v1"),
        ("ssh://deploy@host/o/r.git", "git+ssh://host/o/r.git@v1"),
        ("file:///srv/repo", "git+file:///srv/repo@v1"),
    ],
)
def test_neither_a_user_name_nor_a_password_in_the_url_is_recorded(url: str, recorded: str) -> None:
    assert _git._public(url, "v1") == recorded


def test_a_url_that_looks_like_an_option_is_given_to_git_after_a_double_dash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []

    def fake_git(*args: str, cwd: Path | None = None, check: bool = True) -> str | None:
        calls.append(args)
        raise errors.BadRequest("stop here")

    monkeypatch.setattr(_git, "_git", fake_git)
    with pytest.raises(errors.BadRequest), _git.checkout("git+--upload-pack=touch /tmp/x"):
        pass
    clone = calls[0]
    assert clone[0] == "clone"
    assert clone[-3:] == ("--", "--upload-pack=touch /tmp/x", clone[-1])


def test_a_failed_clone_does_not_show_the_token_from_the_url(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    with (
        pytest.raises(errors.BadRequest) as raised,
        _git.checkout(f"git+file://ghp_SECRET@localhost{missing}"),
    ):
        pass
    assert "ghp_SECRET" not in str(raised.value)
    assert "git clone failed" in str(raised.value)


def test_a_clone_of_a_path_that_is_no_repository_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    with pytest.raises(errors.BadRequest) as raised, _git.checkout(f"git+file://{missing}@v1"):
        pass
    # git's own reason, not the advice it prints after it ("...and the repository exists.")
    assert str(raised.value) == (
        f"git clone failed: '{missing}' does not appear to be a git repository"
    )
