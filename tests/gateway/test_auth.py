"""Access tokens on the invocation path, in process."""

from __future__ import annotations

import base64
import calendar
import dataclasses
import hashlib

import pytest

from modelhost import errors
from modelhost.gateway.auth import CHARGED, Denial, TokenGuard, token_from_headers
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


# The refusals as docs/api.md ("Invocation authentication") words them, with what each leaves for
# the audit log: the model, the caller's address, the request and the reason.
CHALLENGE = 'Basic realm="modelhost", Bearer realm="modelhost"'
URL_REFUSED = (
    "Access tokens in the URL are refused (URLs end up in logs); send it as "
    "'Authorization: Bearer TOKEN' or with curl -u TOKEN:TOKEN."
)
MISSING = (
    "Model 'm' needs an access token: send it with curl -u TOKEN:TOKEN or "
    "'Authorization: Bearer TOKEN'."
)
WRONG = (
    "The access token is not valid for model 'm' (wrong, revoked or regenerated); ask the "
    "model's owner for a current one."
)
API_KEY = (
    "That is an API key, which manages models but never calls them; model 'm' needs one of its "
    "access tokens (mht_...): create one with 'modelhost tokens create m --name WHO'."
)


@pytest.mark.parametrize(
    ("headers", "query", "refusal", "message", "reason"),
    [
        ([], b"key=" + TOKEN.encode(), errors.BadRequest, URL_REFUSED, "token in the URL"),
        ([], b"", errors.Unauthenticated, MISSING, "no token"),
        (
            [(b"authorization", b"Bearer mht_wrong")],
            b"",
            errors.Unauthenticated,
            WRONG,
            "wrong token",
        ),
        (
            [(b"authorization", b"Bearer mh_key")],
            b"",
            errors.Unauthenticated,
            API_KEY,
            "wrong token",
        ),
    ],
    ids=["token in the URL", "no token", "wrong token", "an API key"],
)
def test_each_refusal_says_what_the_docs_say_and_is_queued_for_the_audit_log(
    headers: list[tuple[bytes, bytes]],
    query: bytes,
    refusal: type[errors.ModelhostError],
    message: str,
    reason: str,
) -> None:
    guard = TokenGuard()
    with pytest.raises(refusal) as refused:
        guard.check(ROUTE, _scope(headers, query=query, ip="192.0.2.7"), "REQUEST000000001")
    assert refused.value.message == message
    if refusal is errors.Unauthenticated:
        assert refused.value.headers == {"WWW-Authenticate": CHALLENGE}
    assert list(guard.denials) == [Denial("mid", "m", "192.0.2.7", "REQUEST000000001", reason)]


def test_a_call_whose_address_is_unknown_counts_under_unknown() -> None:
    guard = TokenGuard()
    with pytest.raises(errors.Unauthenticated):
        guard.check(ROUTE, {"headers": [], "query_string": b"", "client": None}, "R" * 16)
    assert [d.source_ip for d in guard.denials] == ["unknown"]


def test_by_default_twenty_failures_within_sixty_seconds_throttle_an_address() -> None:
    now = [500.0]
    guard = TokenGuard(clock=lambda: now[0])  # the documented defaults: 20 failures, 60 s
    for _ in range(20):
        with pytest.raises(errors.Unauthenticated):
            guard.check(ROUTE, _scope([], ip="127.0.0.1"), "R" * 16)
    with pytest.raises(errors.TooManyRequests) as throttled:
        guard.check(ROUTE, _scope([], ip="127.0.0.1"), "R" * 16)
    assert throttled.value.message == (
        "Too many calls with a wrong or missing token from 127.0.0.1; wait a minute and use a "
        "valid access token."
    )
    assert throttled.value.headers == {"Retry-After": "60"}
    now[0] += 60.0  # a failure exactly 60 s old is still within 60 s
    with pytest.raises(errors.TooManyRequests):
        guard.check(ROUTE, _scope([], ip="127.0.0.1"), "R" * 16)
    now[0] += 0.5
    with pytest.raises(errors.Unauthenticated):
        guard.check(ROUTE, _scope([], ip="127.0.0.1"), "R" * 16)


def test_nineteen_failures_do_not_throttle_an_address() -> None:
    guard = TokenGuard()
    for _ in range(19):
        with pytest.raises(errors.Unauthenticated):
            guard.check(ROUTE, _scope([]), "R" * 16)
    with pytest.raises(errors.Unauthenticated):
        guard.check(ROUTE, _scope([]), "R" * 16)


def test_at_most_ten_thousand_denied_calls_wait_for_the_audit_log() -> None:
    guard = TokenGuard()
    for n in range(10_001):  # each from its own address, so none is throttled
        with pytest.raises(errors.Unauthenticated):
            guard.check(
                ROUTE, _scope([], ip=f"10.{n // 256 // 256}.{n // 256 % 256}.{n % 256}"), "R" * 16
            )
    assert len(guard.denials) == 10_000
    assert guard.denials[0].source_ip == "10.0.0.1"  # the oldest was dropped


def test_the_authorization_header_is_found_among_the_others() -> None:
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer " + TOKEN.encode())]
    TokenGuard().check(ROUTE, _scope(headers), "R" * 16)


def test_spaces_between_the_scheme_and_the_token_are_allowed() -> None:
    TokenGuard().check(ROUTE, _scope([(b"authorization", b"Bearer   " + TOKEN.encode())]), "R" * 16)


def test_a_scheme_other_than_basic_or_bearer_carries_no_token() -> None:
    encoded = _basic(TOKEN, TOKEN).split(b" ")[1]
    with pytest.raises(errors.Unauthenticated, match="needs an access token"):
        TokenGuard().check(ROUTE, _scope([(b"authorization", b"Digest " + encoded)]), "R" * 16)


def test_basic_credentials_with_characters_outside_base64_carry_no_token() -> None:
    encoded = _basic(TOKEN, TOKEN).split(b" ")[1]
    garbled = encoded[:4] + b"*" + encoded[4:]  # decoding leniently would drop the "*"
    with pytest.raises(errors.Unauthenticated, match="needs an access token"):
        TokenGuard().check(ROUTE, _scope([(b"authorization", b"Basic " + garbled)]), "R" * 16)


def test_a_basic_password_may_contain_colons_the_user_name_ends_at_the_first() -> None:
    TokenGuard().check(ROUTE, _scope([(b"authorization", _basic(TOKEN, "any:thing"))]), "R" * 16)


def _bearer_of(token: str) -> dict:
    return _scope([(b"authorization", b"Bearer " + token.encode())])


def test_a_token_revoked_after_it_passed_is_refused_at_once() -> None:
    guard = TokenGuard()
    guard.check(ROUTE, _bearer_of(TOKEN), "R" * 16)
    guard.check(ROUTE, _bearer_of(TOKEN), "R" * 16)  # the second time from what it kept
    revoked = dataclasses.replace(ROUTE, tokens=(hashlib.sha256(b"mht_newer").digest(),))
    with pytest.raises(errors.Unauthenticated, match="not valid"):
        guard.check(revoked, _bearer_of(TOKEN), "R" * 16)
    assert [d.reason for d in guard.denials] == ["wrong token"]


def test_a_token_that_passed_for_one_model_is_still_refused_by_another() -> None:
    guard = TokenGuard()
    other = ModelRoute("oid", "other", 5.0, tokens=(hashlib.sha256(b"mht_theirs").digest(),))
    guard.check(ROUTE, _bearer_of(TOKEN), "R" * 16)
    with pytest.raises(errors.Unauthenticated, match="not valid for model 'other'"):
        guard.check(other, _bearer_of(TOKEN), "R" * 16)


def test_more_valid_tokens_than_are_kept_all_keep_passing_and_guesses_are_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modelhost.gateway.auth as auth

    monkeypatch.setattr(auth, "_REMEMBERED_TOKENS", 4)
    tokens = [f"mht_token-{number}" for number in range(10)]
    route = dataclasses.replace(
        ROUTE, tokens=tuple(hashlib.sha256(t.encode()).digest() for t in tokens)
    )
    guard = TokenGuard(failure_limit=1000)
    for _ in range(2):
        for token in tokens:
            guard.check(route, _bearer_of(token), "R" * 16)
    assert 0 < len(guard._digests) <= 4
    for number in range(20):
        with pytest.raises(errors.Unauthenticated):
            guard.check(route, _bearer_of(f"mht_guess-{number}"), "R" * 16)
    assert all(value.startswith(b"Bearer mht_token-") for value in guard._digests)
