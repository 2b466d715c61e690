"""Requests one of the server's processes passes to another keep their caller's address, and
only with the secret the processes share."""

from __future__ import annotations

from typing import Any

import orjson

from modelhost.gateway.auth import CHARGED, CHARGED_HEADER
from modelhost.gateway.control import (
    FORWARDED_FOR,
    GATEWAY_SECRET,
    keep_caller,
    routes_for,
    table_from,
)
from modelhost.gateway.counters import TokenLimit
from modelhost.gateway.routes import ModelRoute, RouteTable
from modelhost.token_limits import Quota, Rate

SECRET = b"s3cret-of-the-processes"


def _scope(*headers: tuple[bytes, bytes], client: Any = None) -> dict[str, Any]:
    return {"headers": list(headers), "client": client}


def test_a_passed_request_keeps_its_callers_address() -> None:
    scope = _scope((GATEWAY_SECRET, SECRET), (FORWARDED_FOR, b"10.1.2.3:45678"))
    keep_caller(scope, SECRET)
    assert scope["client"] == ("10.1.2.3", 45678)


def test_an_ipv6_caller_keeps_its_whole_address() -> None:
    scope = _scope((GATEWAY_SECRET, SECRET), (FORWARDED_FOR, b"::1:5000"))
    keep_caller(scope, SECRET)
    assert scope["client"] == ("::1", 5000)


def test_without_the_right_secret_the_forwarded_address_is_not_believed() -> None:
    for headers in (
        ((GATEWAY_SECRET, b"guessed"), (FORWARDED_FOR, b"10.1.2.3:1")),
        ((FORWARDED_FOR, b"10.1.2.3:1"),),
    ):
        scope = _scope(*headers)
        keep_caller(scope, SECRET)
        assert scope["client"] is None
    # and a server without gateway processes has no secret to check against
    scope = _scope((GATEWAY_SECRET, b""), (FORWARDED_FOR, b"10.1.2.3:1"))
    keep_caller(scope, b"")
    assert scope["client"] is None


def test_a_request_with_an_address_of_its_own_is_left_alone() -> None:
    scope = _scope(
        (GATEWAY_SECRET, SECRET), (FORWARDED_FOR, b"10.1.2.3:1"), client=("127.0.0.1", 9)
    )
    keep_caller(scope, SECRET)
    assert scope["client"] == ("127.0.0.1", 9)


def test_a_call_counted_against_its_token_s_limits_is_not_counted_again_where_it_is_passed() -> (
    None
):
    scope = _scope((GATEWAY_SECRET, SECRET), (FORWARDED_FOR, b"10.1.2.3:1"), (CHARGED_HEADER, b"1"))
    keep_caller(scope, SECRET)
    assert scope[CHARGED] is True


def test_a_caller_cannot_say_its_call_was_counted_already() -> None:
    for scope in (
        _scope((GATEWAY_SECRET, b"guessed"), (CHARGED_HEADER, b"1")),
        _scope((CHARGED_HEADER, b"1")),
        _scope((GATEWAY_SECRET, SECRET), (CHARGED_HEADER, b"1"), client=("10.1.2.3", 1)),
    ):
        keep_caller(scope, SECRET)
        assert CHARGED not in scope


def test_the_route_table_a_gateway_process_gets_carries_each_token_s_limits() -> None:
    digest = bytes(range(32))
    limit = TokenLimit(7, "billing", Rate(50, "s"), Quota(100000, "day"))
    route = ModelRoute("mid", "m", 5.0, tokens=(digest,), limits={digest: limit})
    data = orjson.loads(orjson.dumps(routes_for(RouteTable({"m": route}), {})))
    assert table_from(data, {}, {}).by_key["m"].limits == {digest: limit}
