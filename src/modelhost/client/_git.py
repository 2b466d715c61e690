"""Publishing from git: ``git+URL[@REF]`` is cloned at REF into a temporary directory, and
the commit it resolved to is recorded with the version. The snapshot is uploaded like any
project directory, so later changes to the repository never change a published version."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from modelhost import errors
from modelhost.urls import without_credentials

PREFIX = "git+"


@dataclass(frozen=True)
class Checkout:
    root: Path
    #: the target without any user name or password in it, as recorded with the version
    source: str
    commit: str


def is_git(target: str) -> bool:
    return target.startswith(PREFIX)


def split(target: str) -> tuple[str, str | None]:
    """``git+URL@REF`` -> (URL, REF); the ref may be left out (the default branch)."""
    url = target[len(PREFIX) :]
    parts = urlsplit(url)
    path, at, ref = parts.path.rpartition("@")
    if not at:
        return url, None
    if not ref:
        raise errors.BadRequest(
            f"'{target}' ends in '@' with no ref; give a branch, tag or commit."
        )
    return urlunsplit(parts._replace(path=path)), ref


def _public(url: str, ref: str | None) -> str:
    return without_credentials(PREFIX + url) + (f"@{ref}" if ref else "")


def _git(*args: str, cwd: Path | None = None, check: bool = True) -> str | None:
    """Run git; its output, or None when it failed and ``check`` is off."""
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env={"GIT_TERMINAL_PROMPT": "0", "PATH": os.environ.get("PATH", os.defpath)},
        )
    except FileNotFoundError:
        raise errors.BadRequest(
            "Publishing from git needs the git program; install git, or publish a directory."
        ) from None
    except subprocess.TimeoutExpired:
        raise errors.BadRequest(f"git {args[0]} took longer than 10 minutes.") from None
    if done.returncode != 0:
        if not check:
            return None
        raise errors.BadRequest(f"git {args[0]} failed: {_reason(done.stderr)}")
    return done.stdout.strip()


def _reason(stderr: str) -> str:
    """Why git failed: its first ``fatal:`` or ``error:`` line (git's advice follows it, such
    as "Please make sure you have the correct access rights"), else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return without_credentials(line.removeprefix(prefix))
    return without_credentials(lines[-1]) if lines else "no reason"


def _resolve(root: Path, ref: str) -> str | None:
    """The commit ``ref`` names: a tag, a commit, a local or a remote branch."""
    for candidate in (ref, f"origin/{ref}"):
        commit = _git(
            "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", cwd=root, check=False
        )
        if commit:
            return commit
    return None


@contextlib.contextmanager
def checkout(target: str) -> Iterator[Checkout]:
    """Clone ``git+URL@REF`` at REF into a temporary directory, removed afterwards."""
    url, ref = split(target)
    workdir = Path(tempfile.mkdtemp(prefix="modelhost-git-"))
    try:
        root = workdir / "repo"
        # "--": a URL that starts with "-" is the repository, never an option of git's.
        _git("clone", "--quiet", "--no-checkout", "--", url, str(root))
        commit = _resolve(root, ref or "HEAD")
        if commit is None:
            raise errors.BadRequest(
                f"'{ref}' is not a branch, tag or commit of {_public(url, None)}; check the ref "
                "after '@'."
            )
        _git("checkout", "--quiet", "--detach", commit, cwd=root)
        yield Checkout(root=root, source=_public(url, ref), commit=commit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
