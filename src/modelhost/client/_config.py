"""Where the client finds its server URL and API key when not given them.

In order: explicit arguments; ``MODELHOST_URL`` / ``MODELHOST_API_KEY``; the user's own
config file written by ``modelhost login`` (``$XDG_CONFIG_HOME/modelhost/credentials.json``,
mode 0600); the credentials file a server writes on first start (``$MODELHOST_HOME/credentials``).
A saved key is only ever sent to the server it was saved for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modelhost import errors

DEFAULT_URL = "http://127.0.0.1:8000"


def credentials_path() -> Path:
    home = os.environ.get("MODELHOST_HOME") or str(Path.home() / ".modelhost")
    return Path(home).expanduser() / "credentials"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "modelhost" / "credentials.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_login(url: str, api_key: str, username: str) -> Path:
    """Remember a sign-in for this user (mode 0600); it becomes the default server."""
    path = user_config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url.rstrip("/"), "api_key": api_key, "username": username}, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    url = url or os.environ.get("MODELHOST_URL")
    api_key = api_key or os.environ.get("MODELHOST_API_KEY")
    for saved in (_read(user_config_path()), _read(credentials_path())):
        if url and api_key:
            break
        if saved.get("api_key") and (not url or url.rstrip("/") == saved.get("url")):
            url = url or saved.get("url")
            api_key = api_key or saved.get("api_key")
    url = (url or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        if "://" in url:
            raise errors.BadRequest(
                f"'{url}' is not a server URL; modelhost servers answer on http:// or "
                "https://, such as http://127.0.0.1:8000."
            )
        raise errors.BadRequest(
            f"'{url}' is not a server URL; give it with its scheme, such as http://{url}."
        )
    return url, api_key
