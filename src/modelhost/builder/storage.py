"""Where bundles live beyond this machine: any fsspec URL (setting ``bundle_store``).

By default bundles are only on the local disk (``$MODELHOST_HOME/bundles``). With
``bundle_store`` set to a shared directory (``/mnt/models/bundles``, as Posit Connect uses NFS)
or an object store (``s3://bucket/bundles``, with s3fs), every bundle stored is also written
there, and a bundle missing from the local disk is fetched from there. The local directory is
then a cache. Whatever is read back is checked against its sha256 before it is used, so a
damaged or partial copy is refused, never run.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

from modelhost import errors


class RemoteBundles:
    """Bundles at an fsspec URL, as ``<url>/<sha256>.tar``."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        try:
            fs, base = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise errors.InvalidSetting(
                f"bundle_store '{url}' cannot be opened: {exc}. For s3:// install s3fs "
                "(pip install 'modelhost[s3]'); for a shared directory give its path."
            ) from None
        self.fs: Any = fs
        self.base = base.rstrip("/")
        probe = f"{self.base}/.modelhost-probe-{secrets.token_hex(4)}"
        try:  # writing and removing a file proves the place, the rights and the credentials
            protocols = self.fs.protocol
            if "file" in (protocols if isinstance(protocols, tuple) else (protocols,)):
                self.fs.makedirs(self.base, exist_ok=True)  # never a bucket: that is the admin's
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except Exception as exc:  # whatever the file system raises: say which store and why
            raise errors.InvalidSetting(
                f"bundle_store '{url}' is not reachable ({type(exc).__name__}: {exc}); check "
                "the URL, the bucket or directory, and its credentials."
            ) from None

    def _key(self, sha256: str) -> str:
        return f"{self.base}/{sha256}.tar"

    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self._key(sha256)))

    def put(self, local: Path, sha256: str) -> None:
        """Store ``local`` (a verified bundle) unless the store has it: written under a
        temporary name, then moved, so no reader sees half a bundle under its real name."""
        key = self._key(sha256)
        if self.fs.exists(key):
            return
        staging = f"{self.base}/.staging-{secrets.token_hex(8)}.tar"
        try:
            self.fs.put_file(str(local), staging)
            self.fs.mv(staging, key)
        except BaseException:
            self._forget(staging)
            raise

    def fetch(self, sha256: str, local: Path) -> bool:
        """Copy the bundle to ``local``; False when the store does not have it."""
        key = self._key(sha256)
        if not self.fs.exists(key):
            return False
        self.fs.get_file(key, str(local))
        return True

    def delete(self, sha256: str) -> None:
        self._forget(self._key(sha256))

    def _forget(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(key)
