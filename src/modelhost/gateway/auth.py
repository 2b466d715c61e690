"""Access tokens on the invocation path: checked against in-memory digests, never the database.

Tokens come as HTTP Basic (``-u TOKEN:TOKEN``) or ``Authorization: Bearer TOKEN``, never in the
URL. Each candidate digest is compared in constant time. Failures are counted per source
address (past a limit, calls are refused for a while) and queued for the audit log, which the
reconciler drains at a bounded rate so a flood cannot fill the disk.

A valid token with a rate or a quota (``route.limits``, empty for a model whose tokens have
none) takes one call from its shared counters (:mod:`modelhost.gateway.counters`), or the call
is refused with 429. A call is counted once, by the process that admits it first: one that is
passed to another process then (a peer with an idle instance, or the main process) says so in
a header that is believed only with the gateway secret
(:func:`modelhost.gateway.control.keep_caller`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from modelhost import errors
from modelhost.gateway.counters import Refusal, TokenCounters, TokenLimit
from modelhost.gateway.routes import ModelRoute

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="modelhost", Bearer realm="modelhost"'}
_URL_TOKEN_NAMES = {"token", "access_token", "api_key", "key"}
#: API keys (``operations/credentials.py``) start so; access tokens start ``mht_``.
_API_KEY_PREFIX = "mh_"
#: how many valid tokens' digests a gateway keeps by their ``Authorization`` header value
_REMEMBERED_TOKENS = 1024
#: a scope key: this call was counted against its token's limits (here or by the process that
#: passed it on); and the header that carries it from one of the server's processes to another
CHARGED = "modelhost.charged"
CHARGED_HEADER = b"x-modelhost-charged"


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
        counters: TokenCounters | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.failure_limit = failure_limit
        self.window = window
        self._clock = clock
        #: every limited token's bucket and quota usage, shared by the server's processes
        self.counters = counters if counters is not None else TokenCounters()
        #: seconds since 1970 (quota windows are UTC days and months)
        self._wall = wall
        self._failures: dict[str, deque[float]] = {}
        #: ``Authorization`` header value -> the digest of the valid token in it (_remember)
        self._digests: dict[bytes, bytes] = {}
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
        headers = scope["headers"]
        digest, token, authorization = self._digest(headers)
        if digest is not None:
            if _valid(route, digest):
                # A valid token passes, even from a throttled address, within its limits.
                if token is not None:
                    self._remember(authorization, digest)
                if route.limits:
                    self._limit(route.limits.get(digest), scope)
                return
            if token is None:  # a remembered token that is no longer valid
                token = token_from_headers(headers)
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

    def passes(self, route: ModelRoute, scope: MutableMapping[str, Any]) -> bool:
        """Whether :meth:`check` would let the call through with nothing to record or count:
        a valid token, no query string, a model whose tokens have no limits. False says
        nothing about the call: :meth:`check` decides it."""
        if route.limits or scope.get("query_string"):
            return False
        digest, token, authorization = self._digest(scope["headers"])
        if digest is None or not _valid(route, digest):
            return False
        if token is not None:
            self._remember(authorization, digest)
        return True

    def _digest(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, str | None, bytes]:
        """The sha256 of the call's token; the token when it had to be read from the header
        (None when the digest was remembered, or there is no token); the header's value."""
        authorization = b""
        for name, value in headers:
            if name == b"authorization":
                authorization = value
                digest = self._digests.get(value)
                if digest is not None:
                    return digest, None, value
                break
        token = token_from_headers(headers)
        if token is None:
            return None, None, authorization
        return hashlib.sha256(token.encode()).digest(), token, authorization

    def _remember(self, authorization: bytes, digest: bytes) -> None:
        """Keep the digest of a valid token by its ``Authorization`` value, so that the next
        call with it is checked without parsing the header and hashing the token again. Only
        valid tokens are kept, and a full map starts over: guesses cannot grow it, nor push
        the tokens in use out of it for good. A token remembered stays checked against the
        model's current tokens on every call, so revoking it still works at once."""
        if len(self._digests) >= _REMEMBERED_TOKENS:
            self._digests.clear()
        self._digests[authorization] = digest

    def _limit(self, limit: TokenLimit | None, scope: MutableMapping[str, Any]) -> None:
        if limit is None or CHARGED in scope:
            return
        refusal = self.counters.take(limit, self._wall())
        if refusal is None:
            scope[CHARGED] = True
            return
        raise over_limit(limit, refusal)

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


def _valid(route: ModelRoute, digest: bytes) -> bool:
    """Whether ``digest`` is one of the route's tokens'; constant time per candidate, and no
    early exit."""
    valid = False
    for candidate in route.tokens:
        valid |= hmac.compare_digest(digest, candidate)
    return valid


def over_limit(limit: TokenLimit, refusal: Refusal) -> errors.TooManyRequests:
    """The 429 for a call of ``limit``'s token that ``refusal`` refused: which limit, and when
    a call passes again (also as ``Retry-After``)."""
    headers = {"Retry-After": str(refusal.retry_after)}
    if refusal.limit == "quota":
        resets = dt.datetime.fromtimestamp(refusal.resets_at, dt.timezone.utc)
        return errors.QuotaExceeded(
            f"Access token '{limit.name}' has used its quota of {limit.quota} (UTC); it resets "
            f"at {resets:%Y-%m-%dT%H:%M:%SZ}, in {refusal.retry_after} s. Ask the model's owner "
            "for a larger quota.",
            headers=headers,
        )
    return errors.RateLimited(
        f"Access token '{limit.name}' is over its rate limit of {limit.rate}; the next call is "
        f"allowed in {refusal.retry_after} s. Slow down, or ask the model's owner for a higher "
        "rate.",
        headers=headers,
    )
