"""Access tokens on the invocation path: checked against in-memory digests, never the database.

Tokens come as HTTP Basic (``-u TOKEN:TOKEN``) or ``Authorization: Bearer TOKEN``, never in the
URL. Each candidate digest is compared in constant time. Failures are counted per source
address (past a limit, calls are refused for a while) and queued for the audit log, which the
reconciler drains at a bounded rate so a flood cannot fill the disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from modelhost import errors
from modelhost.gateway.routes import ModelRoute

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="modelhost", Bearer realm="modelhost"'}
_URL_TOKEN_NAMES = {"token", "access_token", "api_key", "key"}
#: API keys (``operations/credentials.py``) start so; access tokens start ``mht_``.
_API_KEY_PREFIX = "mh_"


@dataclass(frozen=True)
class Denial:
    model_id: str
    model: str
    source_ip: str | None
    request_id: str
    reason: str


def token_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name != b"authorization":
            continue
        scheme, _, credentials = value.decode("latin-1").partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            return credentials
        if scheme.lower() == "basic" and credentials:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, _, password = decoded.partition(":")
            return user or password or None
    return None


class TokenGuard:
    def __init__(
        self,
        *,
        failure_limit: int = 20,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_limit = failure_limit
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        #: denied calls waiting to be written to the audit log
        self.denials: deque[Denial] = deque(maxlen=10_000)

    def check(self, route: ModelRoute, scope: MutableMapping[str, Any], request_id: str) -> None:
        client = scope.get("client")
        source = client[0] if client else "unknown"
        query = scope.get("query_string", b"")
        if query and _URL_TOKEN_NAMES & set(parse_qs(query.decode("latin-1"))):
            self._deny(route, source, request_id, "token in the URL")
            raise errors.BadRequest(
                "Access tokens in the URL are refused (URLs end up in logs); send it as "
                "'Authorization: Bearer TOKEN' or with curl -u TOKEN:TOKEN."
            )
        token = token_from_headers(scope["headers"])
        if token is not None:
            digest = hashlib.sha256(token.encode()).digest()
            valid = False
            for candidate in route.tokens:  # constant time per candidate, no early exit
                valid |= hmac.compare_digest(digest, candidate)
            if valid:
                return  # a valid token always passes, even from a throttled address
        self._throttle(source)
        if token is None:
            self._deny(route, source, request_id, "no token")
            raise errors.Unauthenticated(
                f"Model '{route.name}' needs an access token: send it with curl -u TOKEN:TOKEN "
                "or 'Authorization: Bearer TOKEN'.",
                headers=_CHALLENGE,
            )
        self._deny(route, source, request_id, "wrong token")
        if token.startswith(_API_KEY_PREFIX):
            raise errors.Unauthenticated(
                f"That is an API key, which manages models but never calls them; model "
                f"'{route.name}' needs one of its access tokens (mht_...): create one with "
                f"'modelhost tokens create {route.name} --name WHO'.",
                headers=_CHALLENGE,
            )
        raise errors.Unauthenticated(
            f"The access token is not valid for model '{route.name}' (wrong, revoked or "
            "regenerated); ask the model's owner for a current one.",
            headers=_CHALLENGE,
        )

    def _throttle(self, source: str) -> None:
        """Past ``failure_limit`` failures in ``window`` seconds, refuse guesses for a while."""
        failures = self._failures.get(source)
        if not failures:
            return
        now = self._clock()
        while failures and failures[0] < now - self.window:
            failures.popleft()
        if len(failures) >= self.failure_limit:
            raise errors.TooManyRequests(
                f"Too many calls with a wrong or missing token from {source}; wait a minute "
                "and use a valid access token.",
                headers={"Retry-After": str(int(self.window))},
            )

    def _deny(self, route: ModelRoute, source: str, request_id: str, reason: str) -> None:
        self._failures.setdefault(source, deque()).append(self._clock())
        self.denials.append(Denial(route.model_id, route.name, source, request_id, reason))
