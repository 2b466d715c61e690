"""``modelhost backup DIR`` and ``modelhost restore DIR``: everything a server needs to come
back, taken while it serves.

A backup directory holds the database (:mod:`modelhost.db.backups`: SQLite's online backup or
``pg_dump``), every bundle a version, run or schedule names (``bundles/<sha256>.tar``), the
server key (``server.key``, unless left out) and ``manifest.json``, written last, with the
sha256 of every file. The database is copied first: a row never names a bundle before the
bundle is stored, so every bundle the copy names is there to be copied after it.

A restore checks every file against the manifest, then fills a fresh data directory and an
empty database. Environments, logs, run working copies and captured calls are not in a
backup: environments are built again from each version's lock when an instance starts.

>>> made = backup(settings, Path("/backups/2026-12-06"))  # doctest: +SKIP
>>> restore(settings, Path("/backups/2026-12-06"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost import __version__, errors
from modelhost.builder.bundles import BundleStore, file_sha256
from modelhost.builder.storage import RemoteBundles
from modelhost.crypto import KEY_FILE
from modelhost.db import backups as database
from modelhost.db.engine import make_engine, migrate
from modelhost.settings import Settings

MANIFEST = "manifest.json"
FORMAT = 1
BUNDLES = "bundles"


@dataclass
class Outcome:
    """What a backup or a restore did, for the CLI to say."""

    directory: Path
    database: str
    bundles: int
    key: bool
    #: things the user should know (a bundle deleted while the backup ran, no server key)
    warnings: list[str] = field(default_factory=list)


def backup(settings: Settings, destination: Path, *, key: bool = True) -> Outcome:
    """Back the server's database, bundles and (with ``key``) server key up into
    ``destination``, a new or empty directory."""
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise errors.Conflict(
            f"{destination} already exists and is not an empty directory; give a new one."
        )
    home = settings.home_path
    key_file = home / KEY_FILE
    if key and not key_file.exists():
        raise errors.NotFound(
            f"There is no {key_file}: is {home} the server's data directory (setting home)?"
        )
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    outcome = Outcome(destination, database.kind_of(engine), 0, key)
    try:
        files = [database.dump(engine, destination)]
        names = database.referenced_bundles(engine)
    finally:
        engine.dispose()
    store = _store(settings)
    (destination / BUNDLES).mkdir(mode=0o700)
    for sha256 in sorted(names):
        source = store.local(sha256)
        if source is None:
            outcome.warnings.append(
                f"Bundle {sha256[:12]} was deleted while the backup ran (its version, run or "
                "schedule was deleted); it is not in the backup."
            )
            continue
        copy = destination / BUNDLES / source.name
        shutil.copyfile(source, copy)
        if file_sha256(copy) != sha256:
            raise errors.InvalidBundle(
                f"Bundle {sha256[:12]} in {source.parent} is damaged (its sha256 does not "
                "match); the backup stopped. Publish that project again."
            )
        files.append(copy)
        outcome.bundles += 1
    if key:
        copied = destination / KEY_FILE
        shutil.copyfile(key_file, copied)
        os.chmod(copied, 0o600)
        files.append(copied)
    manifest = {
        "format": FORMAT,
        "modelhost_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "database": outcome.database,
        "files": {str(path.relative_to(destination)): file_sha256(path) for path in sorted(files)},
    }
    staging = destination / f".{MANIFEST}"
    staging.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(staging, destination / MANIFEST)  # last: a backup without one is incomplete
    return outcome


def restore(settings: Settings, source: Path) -> Outcome:
    """Check the backup in ``source`` and restore it into the data directory (which must be
    fresh) and the database of ``settings`` (which must be empty)."""
    manifest = read_manifest(source)
    files: dict[str, str] = manifest["files"]
    for name, sha256 in sorted(files.items()):
        path = source / name
        if name == KEY_FILE and not path.exists():
            continue  # kept elsewhere: everything but the secrets comes back
        if not path.is_file():
            raise errors.BadRequest(f"The backup in {source} lacks {name}; it is incomplete.")
        if file_sha256(path) != sha256:
            raise errors.BadRequest(
                f"{path} is damaged: its sha256 does not match the backup's manifest."
            )
    home = settings.home_path
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_file = home / KEY_FILE
    local_bundles = home / BUNDLES
    if key_file.exists() or (local_bundles.is_dir() and any(local_bundles.iterdir())):
        raise errors.Conflict(
            f"The data directory {home} is in use (it has a server key or bundles); restore "
            "into a fresh one (setting home, or --home)."
        )
    kind = str(manifest["database"])
    engine = make_engine(settings.database_url)
    try:
        database.load(engine, source / database.FILES[kind])
        migrate(engine)  # a backup of an older modelhost is brought up to date
    finally:
        engine.dispose()
    store = _store(settings)
    bundles = [name for name in files if name.startswith(f"{BUNDLES}/")]
    for name in bundles:
        target = store.path(Path(name).stem)
        shutil.copyfile(source / name, target)
        os.chmod(target, 0o600)
        if store.remote is not None:
            store.remote.put(target, Path(name).stem)
    outcome = Outcome(home, kind, len(bundles), (source / KEY_FILE).is_file())
    if outcome.key:
        shutil.copyfile(source / KEY_FILE, key_file)
        os.chmod(key_file, 0o600)
    else:
        outcome.warnings.append(
            f"The backup has no {KEY_FILE}: secret variables cannot be decrypted (instances of "
            f"models with secrets will not start) until the original key is put at {key_file} "
            "before the server starts, or the secrets are set again."
        )
    return outcome


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.BadRequest(
            f"{source} is not a complete modelhost backup: it has no {MANIFEST}."
        ) from None
    except (OSError, ValueError) as exc:
        raise errors.BadRequest(f"{path} cannot be read ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise errors.BadRequest(
            f"{path} is not a backup this modelhost ({__version__}) can restore (format "
            f"{manifest.get('format') if isinstance(manifest, dict) else '?'}, expected {FORMAT})."
        )
    if manifest.get("database") not in database.FILES or not isinstance(
        manifest.get("files"), dict
    ):
        raise errors.BadRequest(f"{path} is damaged: it names no database or files.")
    return manifest


def _store(settings: Settings) -> BundleStore:
    remote = RemoteBundles(settings.bundle_store) if settings.bundle_store else None
    return BundleStore(settings.home_path / BUNDLES, remote)
