"""Leftovers of interrupted work in the data directory, found and removed.

A publish, a run's upload, an environment build, a bundle write and a working copy's
extraction each stage their files under a name of their own and rename them into place once
complete, so a crash or a kill in the middle leaves a staging file or folder behind and nothing
half-written in place. :func:`sweep` removes those: all of them at start-up (the data
directory's lock says no other server uses it), and, while the server runs, those older than
``STALE_SECONDS``, which no live operation takes that long to finish.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

#: where staging files and folders live, as glob patterns under the data directory
LEFTOVERS = (
    "tmp/*",  # uploads being unpacked (publish-*, run-*), requirements and locks being made
    "bundles/.staging-*",  # a bundle being written
    "work/.*",  # a version's working copy being extracted
    "envs/.tmp/*",  # an environment being built
    "captures/*/*/*/.part-*",  # a part file of captured calls being written
)
#: how old a leftover must be before the server removes it while running
STALE_SECONDS = 3600.0
#: how often the running server looks
INTERVAL_SECONDS = 600.0


def sweep(
    home: Path, *, older_than: float = 0.0, clock: Callable[[], float] = time.time
) -> list[Path]:
    """Remove the leftovers under ``home`` last changed more than ``older_than`` seconds ago;
    returns what was removed."""
    removed: list[Path] = []
    cutoff = clock() - older_than
    for pattern in LEFTOVERS:
        for path in sorted(home.glob(pattern)):
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("could not remove the leftover %s: %s", path, exc)
                continue
            removed.append(path)
    if removed:
        logger.info(
            "Removed %d leftover(s) of interrupted work: %s",
            len(removed),
            ", ".join(str(p.relative_to(home)) for p in removed[:10]),
        )
    return removed
