"""Helpers for the UI tests: a real session cookie for a user, without the sign-in form."""

from __future__ import annotations

import json
import time
from pathlib import Path

from modelhost.crypto import ServerKey
from modelhost.ui import session

CSRF = "test-csrf-token"


def session_cookies(home: Path, api_key: str) -> dict[str, str]:
    """The cookies a browser holds after signing in with ``api_key``'s account."""
    payload = json.dumps({"key": api_key, "at": int(time.time())})
    return {session.SESSION_COOKIE: ServerKey(home).encrypt(payload), session.CSRF_COOKIE: CSRF}
