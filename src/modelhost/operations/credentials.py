"""API-key credentials: minting, hashing and checking a key, and what ``modelhost serve`` needs
before the API runs: the first admin account and the server's credentials file."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
from pathlib import Path

from modelhost import errors
from modelhost.db.repo import Repo, User

KEY_PREFIX = "mh_"
CREDENTIALS_FILE = "credentials"


def generate_api_key() -> str:
    """A new API key; the ``mh_`` prefix lets secret scanners recognise leaked ones."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough; passwords would need argon2.
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(repo: Repo, user: User, name: str, expires: dt.datetime | None = None) -> str:
    """A new key for ``user``: returned once, stored as its hash with a short prefix."""
    key = generate_api_key()
    repo.add_api_key(user.id, name, hash_key(key), key[: len(KEY_PREFIX) + 4], expires)
    return key


def authenticate(repo: Repo, key: str | None) -> User:
    if not key:
        raise errors.Unauthenticated(
            "This route needs an API key: send 'Authorization: Bearer mh_...'. "
            "The first admin key is in $MODELHOST_HOME/credentials."
        )
    if not key.startswith(KEY_PREFIX):
        raise errors.Unauthenticated("That is not a modelhost API key (they start with 'mh_').")
    user = repo.user_for_key_hash(hash_key(key))
    if user is None:
        raise errors.Unauthenticated("The API key is not valid or was revoked.")
    return user


def bootstrap_admin(repo: Repo, home: Path, url: str) -> str | None:
    """On first start, create the admin account and save its key; returns the key once."""
    if repo.count_users():
        return None
    admin = repo.create_user("admin", is_admin=True)
    key = create_api_key(repo, admin, "bootstrap")
    write_credentials(home / CREDENTIALS_FILE, url, key)
    return key


def refresh_credentials_url(home: Path, url: str) -> None:
    """Keep the saved URL current when the server moves to another address or port."""
    path = home / CREDENTIALS_FILE
    saved = read_credentials(path)
    if saved and saved.get("api_key") and saved.get("url") != url:
        write_credentials(path, url, saved["api_key"])


def write_credentials(path: Path, url: str, key: str) -> None:
    """Write ``{"url", "api_key"}`` readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "api_key": key}, handle)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_credentials(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
