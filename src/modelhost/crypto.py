"""The server key, which encrypts secret values at rest (Fernet: AES-128-CBC with HMAC)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from modelhost import errors

KEY_FILE = "server.key"


class ServerKey:
    """Loaded from ``$MODELHOST_HOME/server.key`` (mode 0600), created on first use."""

    def __init__(self, home: Path) -> None:
        path = home / KEY_FILE
        if not path.exists():
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key())
        self._fernet = Fernet(path.read_bytes().strip())
        self.path = path

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise errors.InternalError(
                f"A secret cannot be decrypted with {self.path}; was the key replaced?"
            ) from None
