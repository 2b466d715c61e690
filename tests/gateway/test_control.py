"""Requests one of the server's processes passes to another keep their caller's address, and
only with the secret the processes share."""

from __future__ import annotations

from typing import Any

from modelhost.gateway.control import FORWARDED_FOR, GATEWAY_SECRET, keep_caller

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
