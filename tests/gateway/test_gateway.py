"""The invocation handler in process, over a hand-built route table."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelhost import errors
from modelhost.backends.base import CallResult, InstanceSpec, InstanceState
from modelhost.backends.channel import CallChannel
from modelhost.gateway import app as app_module
from modelhost.gateway.app import Gateway, new_request_id
from modelhost.gateway.batching import new_pool
from modelhost.gateway.cycle import RESPOND
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.requestlog import RequestLog
from modelhost.gateway.routes import ModelRoute, Release, RouteTable
from modelhost.runtime import protocol

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


# ---------------------------------------------------------------- Gateway.direct


class _Wire:
    """A transport to a stand-in instance: each call of a CALL or BATCH frame is answered on
    the loop's next turn with ``answer(request id, body)``, a RESULT or an ERROR frame (none
    for empty bytes: a call that never ends). ``batches``: the calls each frame held."""

    def __init__(self, channel: CallChannel, answer: Callable[[str, bytes], bytes]) -> None:
        self.channel = channel
        self.answer = answer
        self.decoder = protocol.FrameDecoder()
        self.batches: list[int] = []

    def write(self, data: bytes) -> None:
        for kind, payload in self.decoder.feed(data):
            if kind == protocol.BATCH:
                calls = protocol.decode_batch(payload)
            else:
                calls = [protocol.decode_call(payload)]
            self.batches.append(len(calls))
            for request_id, body in calls:
                answer = self.answer(request_id, body)
                if answer:
                    asyncio.get_running_loop().call_soon(
                        self.channel._on_frame, *self._frame(answer)
                    )

    @staticmethod
    def _frame(data: bytes) -> tuple[int, bytes]:
        ((kind, payload),) = protocol.FrameDecoder().feed(data)
        return kind, payload

    def is_closing(self) -> bool:
        return False


class _Channel(CallChannel):
    def __init__(self, answer: Callable[[str, bytes], bytes]) -> None:
        spec = InstanceSpec("iid", "mid", "vid", 2, Path("."), "f.py", "f", "python", Path("log"))
        super().__init__(spec, InstanceState.READY)
        self._transport = _Wire(self, answer)  # type: ignore[assignment]

    @property
    def instance_name(self) -> str:
        return "iid"


def _sums(request_id: str, body: bytes) -> bytes:
    return protocol.encode_result(request_id, 1.0, b"%d" % sum(orjson.loads(body)["parameters"]))


class _Cycle:
    """What Gateway.direct uses of an InvocationCycle: the body, and respond."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.answer: asyncio.Future[tuple[int, dict[str, str], bytes]] = (
            asyncio.get_running_loop().create_future()
        )

        #: whether the answer was to be written at once (see GatheringTransport)
        self.now: bool | None = None

    def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, now: bool = False
    ) -> bool:
        self.now = now
        self.answer.set_result((status, {k.decode(): v.decode() for k, v in headers}, body))
        return True


def _direct_gateway(
    channel: CallChannel, pool: VersionPool | None = None, timeout: float = 5.0, **route: Any
) -> Gateway:
    gateway = Gateway(max_request_bytes=1000)
    pool = pool or VersionPool("vid", 2, max_queued=4)
    pool.add(channel)
    release = Release("mid", "vid", 2, orjson.dumps({"model_version_number": 2}))
    gateway.table = RouteTable(
        {
            "m": ModelRoute(
                "mid", "m", timeout, {"latest": ((2, 100),)}, {2: pool}, {2: release}, **route
            )
        }
    )
    return gateway


def _scope(path: str = "/models/m/latest/model", **extra: Any) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), *extra.pop("headers", [])]
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "client": ("10.0.0.1", 5000),
        "query_string": b"",
        **extra,
    }


async def test_a_call_started_directly_gets_the_same_envelope_as_through_the_app() -> None:
    gateway = _direct_gateway(_Channel(_sums), invocation_mode="public")
    cycle = _Cycle(b'{"parameters": [2, 3]}')
    runs: list[Any] = []
    assert gateway.direct(_scope(), cycle, runs.append) is True  # type: ignore[arg-type]
    status, headers, body = await asyncio.wait_for(cycle.answer, 5)
    assert runs == []
    answer = orjson.loads(body)
    assert (status, answer["result"], answer["release"]["model_version_number"]) == (200, 5, 2)
    assert headers["x-request-id"] == answer["request_id"]
    assert headers["x-model-version"] == "2"
    through_app = await _post(gateway, "/models/m/latest/model", b'{"parameters": [2, 3]}')
    assert set(through_app.json()) == set(answer)
    assert gateway.table.by_key["m"].pools[2].busy == 0


@pytest.mark.parametrize(
    ("why", "route", "scope"),
    [
        ("a token is needed and none came", {}, {}),
        ("the token has limits", {"invocation_mode": "public", "limits": {b"d": None}}, {}),
        (
            "a valid token, and a query string",
            {"tokens": (hashlib.sha256(b"mht_t").digest(),)},
            {
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"authorization", b"Bearer mht_t"),
                ],
                "query_string": b"a=1",
            },
        ),
        ("passed on by another process", {"invocation_mode": "public"}, {"client": None}),
        (
            "not JSON",
            {"invocation_mode": "public"},
            {"headers": [(b"content-type", b"text/plain")]},
        ),
        ("no such version", {"invocation_mode": "public"}, {"path": "/models/m/versions/9/model"}),
    ],
)
async def test_a_call_direct_cannot_take_whole_is_left_to_the_app_untouched(
    why: str, route: dict[str, Any], scope: dict[str, Any]
) -> None:
    gateway = _direct_gateway(_Channel(_sums), **route)
    headers = scope.pop("headers", [])
    request = _scope(**scope)
    if headers:
        request["headers"] = headers
    runs: list[Any] = []
    assert gateway.direct(request, _Cycle(b'{"parameters": [1]}'), runs.append) is False, why  # type: ignore[arg-type]
    assert runs == []
    assert gateway.table.by_key["m"].pools[2].busy == 0
    assert not gateway.guard.denials  # the app refuses it, once


async def _run_app(gateway: Any, scope: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    """Run the app for a call ``direct`` left to it: the status, headers and body sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body is not read again")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gateway(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, orjson.loads(sent[1]["body"])


async def _app_run(runs: list[Any]) -> Any:
    deadline = asyncio.get_running_loop().time() + 5
    while not runs:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    return runs[0]


async def test_a_started_call_that_fails_goes_on_in_the_app_with_the_same_request_id() -> None:
    def fails(request_id: str, body: bytes) -> bytes:
        error = {"code": "model_error", "message": "ValueError: no"}
        return protocol.encode_error(request_id, orjson.dumps(error))

    gateway = _direct_gateway(_Channel(fails), invocation_mode="public")
    scope = _scope()
    runs: list[Any] = []
    assert gateway.direct(scope, _Cycle(b'{"parameters": [1]}'), runs.append) is True  # type: ignore[arg-type]
    deadline = asyncio.get_running_loop().time() + 5
    while not runs:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert runs == [gateway]  # the app, with the failure in the scope
    status, headers, answer = await _run_app(runs[0], scope)
    assert status == 500
    assert answer["error"]["code"] == "model_error"
    assert headers["x-request-id"] == answer["request_id"]
    assert gateway.table.by_key["m"].pools[2].busy == 0


async def test_a_valid_token_without_limits_is_taken_directly() -> None:
    token = hashlib.sha256(b"mht_t").digest()
    gateway = _direct_gateway(_Channel(_sums), tokens=(token,))
    scope = _scope(headers=[(b"authorization", b"Bearer mht_t")])
    cycle = _Cycle(b'{"parameters": [4]}')
    assert gateway.direct(scope, cycle, [].append) is True  # type: ignore[arg-type]
    assert orjson.loads((await asyncio.wait_for(cycle.answer, 5))[2])["result"] == 4


async def test_a_started_call_whose_answer_cannot_be_made_still_gets_a_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = _direct_gateway(_Channel(_sums), invocation_mode="public")

    def broken(*_args: Any) -> None:
        raise RuntimeError("the envelope broke")

    monkeypatch.setattr(app_module, "success", broken)
    cycle = _Cycle(b'{"parameters": [1]}')
    assert gateway.direct(_scope(), cycle, [].append) is True  # type: ignore[arg-type]
    status, headers, body = await asyncio.wait_for(cycle.answer, 5)
    assert status == 500
    assert orjson.loads(body)["error"]["code"] == "internal_error"
    assert headers["x-request-id"] == orjson.loads(body)["request_id"]
    assert gateway.table.by_key["m"].pools[2].busy == 0


async def test_a_call_answered_directly_is_counted_and_logged_after_its_answer() -> None:
    gateway = _direct_gateway(_Channel(_sums), invocation_mode="public")
    gateway.request_log = RequestLog()
    seen_at_answer: list[int] = []
    cycle = _Cycle(b'{"parameters": [2, 2]}')
    respond = cycle.respond

    def answer(
        status: int, headers: list[tuple[bytes, bytes]], body: bytes, now: bool = False
    ) -> bool:
        seen_at_answer.append(sum(t.statuses.get(200, 0) for t in gateway.metrics.path_totals()))
        return respond(status, headers, body, now)

    cycle.respond = answer  # type: ignore[method-assign]
    assert gateway.direct(_scope(), cycle, [].append) is True  # type: ignore[arg-type]
    status, headers, _ = await asyncio.wait_for(cycle.answer, 5)
    assert (status, seen_at_answer) == (200, [0])  # answered before its bookkeeping
    totals = gateway.metrics.path_totals()
    assert [(t.path, t.statuses) for t in totals] == [("/models/m/latest/model", {200: 1})]
    line = orjson.loads(gateway.request_log.take()["mid"][0])
    assert (line["request_id"], line["status"]) == (headers["x-request-id"], 200)


async def test_a_call_answered_directly_keeps_its_answer_when_recording_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = _direct_gateway(_Channel(_sums), invocation_mode="public")

    def broken(*_args: Any) -> None:
        raise RuntimeError("the metrics broke")

    monkeypatch.setattr(gateway.metrics, "record", broken)
    cycle = _Cycle(b'{"parameters": [3]}')
    assert gateway.direct(_scope(), cycle, [].append) is True  # type: ignore[arg-type]
    status, _, body = await asyncio.wait_for(cycle.answer, 5)
    assert (status, orjson.loads(body)["result"]) == (200, 3)
    assert gateway.table.by_key["m"].pools[2].busy == 0


@pytest.mark.parametrize(
    "refusal",
    [
        errors.CallNotStarted("left rotation before this call was sent"),
        errors.NoReadyInstance("The instance is not ready; retry shortly."),
    ],
)
async def test_an_instance_that_refuses_to_start_a_call_leaves_it_to_the_app(
    refusal: Exception,
) -> None:
    class Leaving(_Channel):
        def start_call(self, request_id: str, body: bytes, timeout: float) -> Any:
            raise refusal

    gateway = _direct_gateway(Leaving(_sums), invocation_mode="public")
    runs: list[Any] = []
    assert gateway.direct(_scope(), _Cycle(b'{"parameters": [1]}'), runs.append) is False  # type: ignore[arg-type]
    assert runs == []
    assert gateway.table.by_key["m"].pools[2].busy == 0


# A batching version's calls (docs/architecture.md, "Batching"), started directly: queued in
# the pool, answered with their batch, each with its own envelope, written at once.


def _batching(max_size: int = 8) -> VersionPool:
    return new_pool("vid", 2, 4, 1, (max_size, 5.0))


async def test_a_batching_version_s_call_is_queued_directly_and_answered_at_once() -> None:
    pool = _batching()
    gateway = _direct_gateway(_Channel(_sums), pool, invocation_mode="public")
    cycle = _Cycle(b'{"parameters": [2, 3]}')
    runs: list[Any] = []
    assert gateway.direct(_scope(), cycle, runs.append) is True  # type: ignore[arg-type]
    status, headers, body = await asyncio.wait_for(cycle.answer, 5)
    assert runs == []
    answer = orjson.loads(body)
    assert (status, answer["result"], headers["x-request-id"]) == (200, 5, answer["request_id"])
    assert cycle.now is True  # its caller's next call may join the next batch
    through_app = await _post(gateway, "/models/m/latest/model", b'{"parameters": [2, 3]}')
    assert set(through_app.json()) == set(answer)
    assert (pool.queued, pool.busy) == (0, 0)


async def test_calls_queued_directly_while_the_instance_is_busy_leave_as_one_batch() -> None:
    channel = _Channel(_sums)
    gateway = _direct_gateway(channel, _batching(), invocation_mode="public")
    cycles = [_Cycle(b'{"parameters": [%d]}' % n) for n in range(4)]
    for cycle in cycles:  # in one turn of the loop: the first finds the instance idle
        assert gateway.direct(_scope(), cycle, [].append) is True  # type: ignore[arg-type]
    answers = [await asyncio.wait_for(cycle.answer, 5) for cycle in cycles]
    assert channel._transport.batches == [1, 3]  # type: ignore[union-attr]
    results = [orjson.loads(body) for _, _, body in answers]
    assert [r["result"] for r in results] == [0, 1, 2, 3]  # each caller its own
    assert len({r["request_id"] for r in results}) == 4


async def test_a_batching_call_that_fails_goes_on_in_the_app_with_the_same_request_id() -> None:
    def fails(request_id: str, body: bytes) -> bytes:
        error = {"code": "model_error", "message": "ValueError: no"}
        return protocol.encode_error(request_id, orjson.dumps(error))

    gateway = _direct_gateway(_Channel(fails), _batching(), invocation_mode="public")
    scope = _scope()
    runs: list[Any] = []
    assert gateway.direct(scope, _Cycle(b'{"parameters": [1]}'), runs.append) is True  # type: ignore[arg-type]
    status, headers, answer = await _run_app(await _app_run(runs), scope)
    assert (status, answer["error"]["code"]) == (500, "model_error")
    assert headers["x-request-id"] == answer["request_id"]


class _Ending(_Channel):
    """A stand-in instance whose end (after a call past its timeout) is only noted."""

    def end(self, reason: str, message: str) -> None:
        self.ended_by = reason


async def test_a_batching_call_past_its_timeout_gets_the_same_504_as_through_the_app() -> None:
    def never(request_id: str, body: bytes) -> bytes:
        return b""  # the call runs for ever

    gateway = _direct_gateway(_Ending(never), _batching(), 0.05, invocation_mode="public")
    scope = _scope()
    runs: list[Any] = []
    assert gateway.direct(scope, _Cycle(b'{"parameters": [1]}'), runs.append) is True  # type: ignore[arg-type]
    status, _, answer = await _run_app(await _app_run(runs), scope)
    assert (status, answer["error"]["code"]) == (504, "model_timeout")
    other = _direct_gateway(_Ending(never), _batching(), 0.05, invocation_mode="public")
    through_app = await _post(other, "/models/m/latest/model", b'{"parameters": [1]}')
    assert through_app.status_code == 504
    assert answer["error"]["message"] == through_app.json()["error"]["message"]


@pytest.mark.parametrize("why", ["the version stopped taking calls", "no instance at all"])
async def test_a_batching_call_the_pool_refuses_is_left_to_the_app_untouched(why: str) -> None:
    pool = _batching()
    gateway = _direct_gateway(_Channel(_sums), pool, invocation_mode="public")
    if why == "no instance at all":
        pool.remove(pool.instances()[0])
    else:
        pool.close()
    runs: list[Any] = []
    assert gateway.direct(_scope(), _Cycle(b'{"parameters": [1]}'), runs.append) is False, why  # type: ignore[arg-type]
    assert (runs, pool.queued) == ([], 0)


def _routed_to(gateway: Gateway, path: str) -> int:
    return gateway._route(path)[1]


def _table_with(routes: dict[str, tuple[tuple[int, int], ...]]) -> RouteTable:
    route = ModelRoute("mid", "m", 5.0, routes)
    return RouteTable({"mid": route, "m": route})


def test_a_canary_splits_the_calls_of_one_path_on_every_call() -> None:
    gateway = Gateway(max_request_bytes=1000)
    gateway.table = _table_with({"latest": ((1, 50), (2, 50)), "label/prod": ((3, 100),)})
    numbers = {_routed_to(gateway, "/models/m/latest/model") for _ in range(200)}
    assert numbers == {1, 2}
    assert {_routed_to(gateway, "/models/m/labels/prod/model") for _ in range(5)} == {3}


def test_a_path_goes_to_the_new_version_as_soon_as_the_table_is_replaced() -> None:
    gateway = Gateway(max_request_bytes=1000)
    gateway.table = _table_with({"latest": ((1, 100),)})
    assert _routed_to(gateway, "/models/m/latest/model") == 1
    assert _routed_to(gateway, "/models/mid/versions/7/model") == 7
    gateway.table = _table_with({"latest": ((2, 100),)})
    assert _routed_to(gateway, "/models/m/latest/model") == 2
    gateway.table = RouteTable({})  # the model is gone
    with pytest.raises(errors.ModelNotFound):
        gateway._route("/models/m/latest/model")


@pytest.mark.parametrize("batching", [True, False])
async def test_only_a_batching_version_s_answer_is_written_at_once_under_load(
    batching: bool,
) -> None:
    gateway = Gateway(max_request_bytes=1000)
    pool = new_pool("vid", 2, 4, 1, (8, 5.0) if batching else None)
    pool.add(_Channel(_sums))
    release = Release("mid", "vid", 2, orjson.dumps({"model_version_number": 2}))
    route = ModelRoute(
        "mid", "m", 5.0, {"latest": ((2, 100),)}, {2: pool}, {2: release}, invocation_mode="public"
    )
    gateway.table = RouteTable({"mid": route, "m": route})
    answers: list[tuple[int, bytes, bool]] = []

    def respond(status: int, headers: Any, body: bytes, now: bool = False) -> bool:
        answers.append((status, body, now))
        return True

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"parameters": [5]}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("answered through respond")

    await gateway(_scope(**{RESPOND: respond}), receive, send)
    ((status, body, now),) = answers
    assert (status, orjson.loads(body)["result"]) == (200, 5)
    # Written at the end of the loop's turn, a batch's answers would bring their callers'
    # next calls after its instance went idle: the first would leave alone.
    assert now is batching
