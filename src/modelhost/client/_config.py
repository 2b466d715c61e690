"""Where the client finds its server URL and API key when not given them."""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def credentials_path() -> Path:
    home = os.environ.get("MODELHOST_HOME") or str(Path.home() / ".modelhost")
    return Path(home).expanduser() / "credentials"


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Explicit values, then MODELHOST_URL / MODELHOST_API_KEY, then the credentials file."""
    url = url or os.environ.get("MODELHOST_URL")
    api_key = api_key or os.environ.get("MODELHOST_API_KEY")
    if not url or not api_key:
        try:
            saved = json.loads(credentials_path().read_text())
        except (OSError, ValueError):
            saved = {}
        if isinstance(saved, dict) and (not url or url.rstrip("/") == saved.get("url")):
            # A saved key is only sent to the server it was saved for.
            url = url or saved.get("url")
            api_key = api_key or saved.get("api_key")
    return (url or DEFAULT_URL).rstrip("/"), api_key
