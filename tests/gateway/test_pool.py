"""Admission: one call per instance, a bounded queue, and immediate refusals past it."""

from __future__ import annotations

import asyncio

import pytest

from modelhost import errors
from modelhost.backends.base import InstanceState
from modelhost.gateway.pool import VersionPool

pytestmark = pytest.mark.anyio


class Stub:
    def __init__(self) -> None:
        self.state = InstanceState.READY
        self.inflight = 0


async def test_each_instance_serves_one_call_and_the_next_call_waits_for_it() -> None:
    pool = VersionPool("v", 1, max_queued=5)
    instance = Stub()
    pool.add(instance)  # type: ignore[arg-type]
    first = await pool.acquire(1)
    waiting = asyncio.ensure_future(pool.acquire(1))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert pool.queued == 1
    pool.release(first)
    assert await waiting is instance


async def test_one_call_at_a_time_keeps_going_to_the_instance_that_answered_last() -> None:
    pool = VersionPool("v", 1, max_queued=5)
    first, second = Stub(), Stub()
    pool.add(first)  # type: ignore[arg-type]
    pool.add(second)  # type: ignore[arg-type]
    used = []
    for _ in range(4):
        instance = await pool.acquire(1)
        used.append(instance)
        pool.release(instance)
    assert used == [second] * 4
    # Calls at once spread over the idle instances, and the last one back is next.
    a, b = await pool.acquire(1), await pool.acquire(1)
    assert {a, b} == {first, second}
    pool.release(b)
    pool.release(a)
    assert await pool.acquire(1) is a


async def test_a_full_queue_is_refused_immediately_with_retry_after() -> None:
    pool = VersionPool("v", 1, max_queued=1)
    pool.add(Stub())  # type: ignore[arg-type]
    await pool.acquire(1)
    queued = asyncio.ensure_future(pool.acquire(5))
    await asyncio.sleep(0)
    with pytest.raises(errors.QueueFull) as refused:
        await pool.acquire(5)
    assert refused.value.headers == {"Retry-After": "1"}
    queued.cancel()


async def test_no_instance_and_none_starting_is_a_503() -> None:
    with pytest.raises(errors.NoReadyInstance):
        await VersionPool("v", 3, max_queued=5).acquire(1)


async def test_calls_wait_for_a_starting_instance_and_fail_if_it_never_comes() -> None:
    pool = VersionPool("v", 1, max_queued=5)
    pool.set_starting(1)
    waiting = asyncio.ensure_future(pool.acquire(5))
    await asyncio.sleep(0)
    pool.set_starting(0)
    with pytest.raises(errors.NoReadyInstance):
        await waiting


async def test_a_dead_instance_is_dropped_on_release() -> None:
    pool = VersionPool("v", 1, max_queued=5)
    instance = Stub()
    pool.add(instance)  # type: ignore[arg-type]
    taken = await pool.acquire(1)
    instance.state = InstanceState.EXITED
    pool.release(taken)
    assert pool.ready_count == 0


async def test_waiting_longer_than_the_timeout_is_a_504() -> None:
    pool = VersionPool("v", 1, max_queued=5)
    pool.add(Stub())  # type: ignore[arg-type]
    await pool.acquire(1)
    with pytest.raises(errors.ModelTimeout):
        await pool.acquire(0.01)
    assert pool.queued == 0


async def test_a_closed_pool_sends_its_waiting_and_later_calls_back_to_be_routed() -> None:
    pool = VersionPool("v", 3, max_queued=5)
    pool.expect_replacement()  # a crashed instance's replacement is awaited
    waiting = asyncio.ensure_future(pool.acquire(30))
    await asyncio.sleep(0)
    assert pool.queued == 1
    pool.close()
    with pytest.raises(errors.CallNotStarted, match="Version 3 stopped taking calls"):
        await waiting
    with pytest.raises(errors.CallNotStarted):
        await pool.acquire(30)
    assert pool.queued == 0


class Running:
    """A stand-in instance that has been running a call since ``since`` (the loop's clock)."""

    def __init__(self, since: float | None) -> None:
        self.state = InstanceState.READY
        self.inflight = 0
        self.since = since

    def running_since(self) -> float | None:
        return self.since


async def test_a_pool_knows_when_an_instance_has_been_running_a_call_for_long() -> None:
    now = asyncio.get_running_loop().time()
    pool = VersionPool("v", 1, max_queued=4)
    pool.add(Running(None))  # type: ignore[arg-type]
    pool.add(Running(now - 0.002))  # type: ignore[arg-type]
    # Margins no pause of a busy machine between `now` and the check can cross (with 5 ms
    # the test failed once after such a pause).
    assert not pool.running_longer_than(60.0)  # one idle, one 2 ms into its call
    pool.add(Running(now - 120.0))  # type: ignore[arg-type]
    assert pool.running_longer_than(60.0)  # a call of two minutes
