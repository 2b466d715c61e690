"""The data directory is private: only the user the server runs as may read it.

``modelhost serve`` sets a 0o077 umask before it creates anything, so whatever the server
writes later (database, logs, run logs, working copies) is closed to other local users. A data
directory made by an older version, or by hand, is tightened once at start-up by
:func:`make_private`: the directory itself and its known top-level entries, without walking
into them (a closed directory hides what is inside it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: what ``modelhost serve`` sets before it creates anything
UMASK = 0o077
#: files directly in the data directory that hold secrets or data: made 0600
PRIVATE_FILES = (
    "modelhost.db",
    "modelhost.db-wal",
    "modelhost.db-shm",
    "modelhost.toml",
    "server.key",
    "server.lock",
    "credentials",
)
#: directories directly in the data directory: made 0700
PRIVATE_DIRECTORIES = ("logs", "runs", "run", "work", "bundles", "envs", "tmp", "uv-cache")


def make_private(home: Path) -> list[str]:
    """Take group and other permissions off ``home`` and its known top-level entries.

    Returns what was changed (``home`` as ``.``, the others by name), for the start-up log.
    Symbolic links are left alone: chmod would change what they point to.
    """
    changed: list[str] = []
    wanted = [(".", 0o700)]
    wanted += [(name, 0o600) for name in PRIVATE_FILES]
    wanted += [(name, 0o700) for name in PRIVATE_DIRECTORIES]
    for name, mode in wanted:
        path = home if name == "." else home / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
            continue
        os.chmod(path, mode)
        changed.append(name)
    return changed
