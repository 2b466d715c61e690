"""Access tokens on the invocation path, in process."""

from __future__ import annotations

import base64
import calendar
import dataclasses
import hashlib

import pytest

from modelhost import errors
from modelhost.gateway.auth import CHARGED, TokenGuard, token_from_headers
from modelhost.gateway.counters import TokenLimit
from modelhost.gateway.routes import ModelRoute
from modelhost.token_limits import Quota, Rate

TOKEN = "mht_good-token"
ROUTE = ModelRoute("mid", "m", 5.0, tokens=(hashlib.sha256(TOKEN.encode()).digest(),))
NOON = float(calendar.timegm((2026, 12, 6, 12, 0, 0)))


def _scope(headers: list[tuple[bytes, bytes]], query: bytes = b"", ip: str = "10.0.0.1") -> dict:
    return {"headers": headers, "query_string": query, "client": (ip, 5000)}


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


@pytest.mark.parametrize(
    "header",
    [b"Bearer " + TOKEN.encode(), _basic(TOKEN, TOKEN), _basic(TOKEN, ""), _basic("", TOKEN)],
)
def test_a_valid_token_passes_as_bearer_or_basic(header: bytes) -> None:
    TokenGuard().check(ROUTE, _scope([(b"authorization", header)]), "R" * 16)


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ([], "needs an access token"),
        ([(b"authorization", b"Bearer mht_wrong")], "not valid"),
        ([(b"authorization", b"Basic !!notbase64")], "needs an access token"),
    ],
)
def test_a_missing_or_wrong_token_is_a_401_with_a_challenge(
    headers: list[tuple[bytes, bytes]], fragment: str
) -> None:
    guard = TokenGuard()
    with pytest.raises(errors.Unauthenticated, match=fragment) as refused:
        guard.check(ROUTE, _scope(headers), "R" * 16)
    assert "Basic" in refused.value.headers["WWW-Authenticate"]
    assert [d.reason for d in guard.denials] in (["no token"], ["wrong token"])


def test_a_token_in_the_query_string_is_refused_even_when_valid() -> None:
    scope = _scope(
        [(b"authorization", b"Bearer " + TOKEN.encode())], query=b"token=" + TOKEN.encode()
    )
    with pytest.raises(errors.BadRequest, match="in the URL are refused"):
        TokenGuard().check(ROUTE, scope, "R" * 16)


def test_repeated_failures_from_one_address_are_throttled_but_valid_tokens_pass() -> None:
    guard = TokenGuard(failure_limit=3)
    for _ in range(3):
        with pytest.raises(errors.Unauthenticated):
            guard.check(ROUTE, _scope([]), "R" * 16)
    with pytest.raises(errors.TooManyRequests):
        guard.check(ROUTE, _scope([(b"authorization", b"Bearer mht_guess")]), "R" * 16)
    guard.check(ROUTE, _scope([(b"authorization", b"Bearer " + TOKEN.encode())]), "R" * 16)
    guard.check(
        ROUTE, _scope([(b"authorization", b"Bearer " + TOKEN.encode())], ip="10.0.0.2"), "R" * 16
    )


def test_the_throttle_lets_an_address_guess_again_once_its_window_has_passed() -> None:
    now = [1000.0]
    guard = TokenGuard(failure_limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(3):
        with pytest.raises(errors.Unauthenticated):
            guard.check(ROUTE, _scope([]), "R" * 16)
    now[0] += 59.0
    with pytest.raises(errors.TooManyRequests) as throttled:
        guard.check(ROUTE, _scope([]), "R" * 16)
    assert throttled.value.headers["Retry-After"] == "60"
    now[0] += 2.0  # the three failures are now more than a minute old
    with pytest.raises(errors.Unauthenticated):
        guard.check(ROUTE, _scope([]), "R" * 16)


def test_every_live_token_of_a_model_is_accepted_not_only_the_newest() -> None:
    tokens = ["mht_first-caller", "mht_second-caller", "mht_third-caller"]
    route = dataclasses.replace(
        ROUTE, tokens=tuple(hashlib.sha256(t.encode()).digest() for t in tokens)
    )
    for token in tokens:
        TokenGuard().check(
            route, _scope([(b"authorization", b"Bearer " + token.encode())]), "R" * 16
        )
        TokenGuard().check(route, _scope([(b"authorization", _basic(token, token))]), "R" * 16)


@pytest.mark.parametrize("scheme", [b"bearer", b"BEARER", b"bEaReR", b"basic", b"BASIC"])
def test_the_authorization_scheme_is_read_in_any_case(scheme: bytes) -> None:
    credentials = (
        TOKEN.encode() if scheme.lower() == b"bearer" else _basic(TOKEN, TOKEN).split(b" ")[1]
    )
    TokenGuard().check(ROUTE, _scope([(b"authorization", scheme + b" " + credentials)]), "R" * 16)


def test_a_model_without_tokens_accepts_none() -> None:
    with pytest.raises(errors.Unauthenticated):
        TokenGuard().check(
            dataclasses.replace(ROUTE, tokens=()),
            _scope([(b"authorization", b"Bearer " + TOKEN.encode())]),
            "R" * 16,
        )


def test_other_headers_are_ignored() -> None:
    assert token_from_headers([(b"x-token", b"abc")]) is None


def test_query_parameters_that_merely_end_in_key_are_not_mistaken_for_tokens() -> None:
    scope = _scope([(b"authorization", b"Bearer " + TOKEN.encode())], query=b"monkey=1&x=2")
    TokenGuard().check(ROUTE, scope, "R" * 16)


@pytest.mark.parametrize("header", [b"Bearer mh_an-api-key", _basic("mh_an-api-key", "x")])
def test_an_api_key_sent_to_a_model_is_told_apart_from_a_wrong_token(header: bytes) -> None:
    guard = TokenGuard()
    with pytest.raises(errors.Unauthenticated) as refused:
        guard.check(ROUTE, _scope([(b"authorization", header)]), "R" * 16)
    assert "is an API key" in refused.value.message
    assert "modelhost tokens create m --name WHO" in refused.value.message
    assert [d.reason for d in guard.denials] == ["wrong token"]


class _Wall:
    """The guard's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = NOON

    def __call__(self) -> float:
        return self.now


def _limited(
    rate: Rate | None = None, quota: Quota | None = None, wall: _Wall | None = None
) -> tuple[TokenGuard, ModelRoute]:
    guard = TokenGuard(wall=wall or _Wall())
    slot = guard.counters.slot(0, 0)
    assert slot is not None
    digest = hashlib.sha256(TOKEN.encode()).digest()
    route = dataclasses.replace(ROUTE, limits={digest: TokenLimit(slot, "billing", rate, quota)})
    return guard, route


def _bearer() -> dict:
    return _scope([(b"authorization", b"Bearer " + TOKEN.encode())])


def test_a_token_over_its_rate_gets_a_429_saying_which_limit_and_when_to_retry() -> None:
    wall = _Wall()
    guard, route = _limited(rate=Rate(1, "min"), wall=wall)
    guard.check(route, _bearer(), "R" * 16)
    with pytest.raises(errors.RateLimited) as refused:
        guard.check(route, _bearer(), "R" * 16)
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "60"
    assert "'billing' is over its rate limit of 1/min" in refused.value.message
    wall.now += 60
    guard.check(route, _bearer(), "R" * 16)


def test_a_token_past_its_quota_gets_a_429_saying_when_the_quota_resets() -> None:
    guard, route = _limited(quota=Quota(1, "day"))
    guard.check(route, _bearer(), "R" * 16)
    with pytest.raises(errors.QuotaExceeded) as refused:
        guard.check(route, _bearer(), "R" * 16)
    assert refused.value.headers["Retry-After"] == str(12 * 3600)
    assert "quota of 1/day (UTC); it resets at 2026-12-07T00:00:00Z" in refused.value.message
    assert not guard.denials  # a valid token over its limits is not a denied token


def test_a_call_counted_already_by_another_process_is_not_counted_again() -> None:
    guard, route = _limited(quota=Quota(1, "day"))
    scope = _bearer()
    guard.check(route, scope, "R" * 16)
    assert scope[CHARGED] is True
    guard.check(route, scope, "R" * 16)  # passed on: the same call, not a second one


def test_tokens_without_limits_on_a_model_with_a_limited_token_are_not_counted() -> None:
    guard, route = _limited(quota=Quota(1, "day"))
    other = "mht_other-token"
    route = dataclasses.replace(
        route, tokens=(*route.tokens, hashlib.sha256(other.encode()).digest())
    )
    for _ in range(3):
        scope = _scope([(b"authorization", b"Bearer " + other.encode())])
        guard.check(route, scope, "R" * 16)
        assert CHARGED not in scope
