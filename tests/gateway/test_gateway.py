"""The invocation handler in process, over a hand-built route table."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from modelhost.backends.base import CallResult, InstanceState
from modelhost.gateway.app import Gateway, new_request_id
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.routes import ModelRoute, Release, RouteTable

pytestmark = pytest.mark.anyio


class Instance:
    def __init__(self, result: bytes = b'{"a":[1,2]}', fail: Exception | None = None) -> None:
        self.state = InstanceState.READY
        self.inflight = 0
        self.result = result
        self.fail = fail
        self.bodies: list[bytes] = []

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        self.bodies.append(body)
        if self.fail:
            raise self.fail
        return CallResult(2.4, self.result)


def _gateway(instance: Instance) -> Gateway:
    gateway = Gateway(max_request_bytes=1000)
    pool = VersionPool("vid", 2, max_queued=4)
    pool.add(instance)  # type: ignore[arg-type]
    release = Release("mid", "vid", 2, orjson.dumps({"model_version_number": 2}))
    route = ModelRoute(
        "mid",
        "m",
        5.0,
        {"latest": ((2, 100),)},
        {2: pool},
        {2: release},
        {1: "failed"},
        invocation_mode="public",
    )
    gateway.table = RouteTable({"mid": route, "m": route})
    return gateway


async def _post(gateway: Gateway, path: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://t"
    ) as http:
        return await http.post(path, content=body, headers={"Content-Type": "application/json"})


async def test_the_body_is_forwarded_untouched_and_the_result_wrapped_in_the_envelope() -> None:
    instance = Instance()
    response = await _post(_gateway(instance), "/models/m/latest/model", b'{"data": {"x": 1}}')
    assert instance.bodies == [b'{"data": {"x": 1}}']
    body = response.json()
    assert body["result"] == {"a": [1, 2]}
    assert body["model_time_in_ms"] == 2
    assert body["release"] == {"model_version_number": 2}
    assert body["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-model-version"] == "2"


async def test_a_version_that_is_not_running_is_a_503_that_says_its_status() -> None:
    response = await _post(_gateway(Instance()), "/models/mid/versions/1/model", b"{}")
    assert response.status_code == 503
    assert "status: failed" in response.json()["error"]["message"]


async def test_an_unexpected_failure_is_a_generic_500_in_the_envelope() -> None:
    instance = Instance(fail=RuntimeError("secret internals"))
    response = await _post(_gateway(instance), "/models/m/latest/model", b"{}")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret" not in response.text


def test_request_ids_are_sixteen_upper_case_characters_and_unique() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch("[A-Z2-7]{16}", i) for i in ids)


async def test_a_call_waiting_on_a_version_that_loses_the_route_is_answered_by_the_new_one() -> (
    None
):
    import asyncio

    gateway = Gateway(max_request_bytes=1000)
    old_pool = VersionPool("v2", 2, max_queued=4)
    old_pool.expect_replacement()  # its instance crashed: calls wait for a replacement
    new_pool = VersionPool("v1", 1, max_queued=4)
    answering = Instance(b'"from 1"')
    new_pool.add(answering)  # type: ignore[arg-type]
    releases = {
        n: Release("mid", f"v{n}", n, orjson.dumps({"model_version_number": n})) for n in (1, 2)
    }

    def table(latest: int) -> RouteTable:
        route = ModelRoute(
            "mid",
            "m",
            30.0,
            {"latest": ((latest, 100),)},
            {1: new_pool, 2: old_pool},
            releases,
            invocation_mode="public",
        )
        return RouteTable({"mid": route, "m": route})

    gateway.table = table(latest=2)
    call = asyncio.ensure_future(_post(gateway, "/models/m/latest/model", b"{}"))
    while not old_pool.queued:
        await asyncio.sleep(0.001)
    gateway.table = table(latest=1)  # the route went back to version 1
    old_pool.close()
    response = await asyncio.wait_for(call, timeout=5)
    assert response.status_code == 200
    assert response.json()["result"] == "from 1"
    assert response.headers["x-model-version"] == "1"


class Recording(Instance):
    """Answers, and notes the timeout each call was given."""

    def __init__(self, fail: Exception | None = None) -> None:
        super().__init__(b"1", fail)
        self.timeouts: list[float] = []

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        self.timeouts.append(timeout)
        return await super().call(request_id, body, timeout)


async def test_an_asynchronous_call_sent_again_after_its_instance_went_away_keeps_its_timeout() -> (
    None
):
    from modelhost import errors

    lost = Recording(fail=errors.CallNotStarted("its instance went away before it started"))
    gateway = _gateway(lost)  # the model's timeout: 5 s
    pool = gateway.table.find("m").pools[2]  # type: ignore[union-attr]
    answering = Recording()

    def replaced(instance: object) -> None:
        VersionPool.release(pool, instance)  # type: ignore[arg-type]
        if instance is lost:  # gone: the call is sent again, to its replacement
            pool.remove(lost)  # type: ignore[arg-type]
            pool.add(answering)  # type: ignore[arg-type]

    pool.release = replaced  # type: ignore[method-assign]
    result, release = await gateway.call_with_timeout(
        "/models/m/latest/model", b"{}", new_request_id(), 600.0
    )
    assert (result.result_json, release.number) == (b"1", 2)
    assert lost.timeouts == [600.0]
    assert answering.timeouts == [600.0]  # not the model's 5 s
