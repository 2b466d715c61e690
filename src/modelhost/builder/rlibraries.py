"""R libraries as named environments: a directory of installed packages an admin prepared.

CRAN is often out of reach from the servers, so modelhost installs no R packages itself: an
admin prepares a library (``renv``, ``R CMD INSTALL -l DIR``, or Debian's packages copied into
a directory) and registers it with ``modelhost envs create NAME --r-library DIR``. An R version
published with ``--environment NAME`` then sees that library and base R only: its instances
start with ``R_LIBS``, ``R_LIBS_USER`` and ``R_LIBS_SITE`` all set to the library, so the
server's site library is not on ``.libPaths()``, and the library is bound read-only into the
sandbox. The worker's own jsonlite is still loaded from the server's R (it needs it to speak
JSON), from the directory :func:`worker_library` finds.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

from modelhost import errors


def check_library(path: str, home: Path) -> Path:
    """``path`` as an R library a version may use, or a clear error."""
    library = Path(path)
    if not library.is_absolute():
        raise errors.BadRequest(
            f"The R library '{path}' must be an absolute path on the server, such as "
            "/srv/r-libraries/wine."
        )
    library = Path(os.path.normpath(library))
    if library == home or home in library.parents or library in home.parents:
        raise errors.BadRequest(
            f"The R library '{library}' is inside (or holds) the data directory {home}, which "
            "instances must not see; put it somewhere else, such as /srv/r-libraries."
        )
    if not library.is_dir():
        raise errors.BadRequest(
            f"There is no directory '{library}' on the server. Prepare the library there "
            "first (with renv, or R CMD INSTALL -l DIR PACKAGE), then register it."
        )
    if not packages(library):
        raise errors.BadRequest(
            f"'{library}' holds no R packages (no folder in it has a DESCRIPTION file); "
            "install some with R CMD INSTALL -l DIR PACKAGE.tar.gz, or name another directory."
        )
    return library


def packages(library: Path) -> list[str]:
    """``name version`` of each package installed in ``library``, by name."""
    found = []
    try:
        folders = sorted(library.iterdir())
    except OSError:
        return []
    for folder in folders:
        description = folder / "DESCRIPTION"
        if not description.is_file():
            continue
        fields = _fields(description)
        name = fields.get("Package", folder.name)
        found.append(f"{name} {fields['Version']}" if "Version" in fields else name)
    return found


def _fields(description: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = description.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if line[:1].isspace() or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def instance_env(library: str, rscript: str) -> dict[str, str]:
    """The environment variables that confine an R instance to ``library`` and base R."""
    env = {
        "R_LIBS": library,
        "R_LIBS_USER": library,
        "R_LIBS_SITE": library,
        "MODELHOST_R_LIBRARY": library,
    }
    worker = worker_library(rscript)
    if worker is not None:
        env["MODELHOST_R_WORKER_LIBRARY"] = worker
    return env


@functools.cache
def worker_library(rscript: str) -> str | None:
    """The library holding the server R's jsonlite (the worker's one dependency), or None."""
    try:
        found = subprocess.run(
            [rscript, "--vanilla", "-e", 'cat(dirname(find.package("jsonlite", quiet = TRUE)))'],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    path = found.stdout.strip()
    return path if found.returncode == 0 and path else None
