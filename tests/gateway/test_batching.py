"""The batching pool with stand-in instances: when calls leave, with whom, and the limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from modelhost import errors
from modelhost.backends.base import InstanceState
from modelhost.gateway.batching import SIZE_BUCKETS, BatchingPool, batch_counts
from modelhost.runtime import protocol

pytestmark = pytest.mark.anyio


class Instance:
    """Records each batch it is sent; ``answer`` completes the oldest one."""

    def __init__(self) -> None:
        self.state = InstanceState.READY
        self.inflight = 0
        self.batches: list[list[tuple[str, bytes, asyncio.Future[tuple[int, bytes]]]]] = []

    def send_batch(self, calls: Any, timeout: float, *, runs_now: bool) -> None:
        self.batches.append(list(calls))

    def answer(self) -> None:
        for request_id, body, future in self.batches.pop(0):
            payload = protocol.encode_result(request_id, 1.0, body)[protocol.HEADER.size :]
            future.set_result((protocol.RESULT, payload))


def _pool(max_size: int = 4, max_wait_ms: float = 10_000, max_queued: int = 100) -> BatchingPool:
    return BatchingPool("v", 1, max_queued, max_size=max_size, max_wait_ms=max_wait_ms)


def _submit(pool: BatchingPool, n: int, timeout: float = 30) -> asyncio.Task[Any]:
    return asyncio.ensure_future(pool.submit(f"REQUEST{n:09d}", str(n).encode(), timeout))


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_lone_call_goes_at_once_to_a_free_instance() -> None:
    pool, instance = _pool(), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    call = _submit(pool, 1)
    await _settle()
    assert [[c[0] for c in b] for b in instance.batches] == [["REQUEST000000001"]]
    instance.answer()
    assert (await call).result_json == b"1"


async def test_calls_waiting_for_a_busy_instance_leave_together_when_it_frees_up() -> None:
    pool, instance = _pool(max_size=8), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    first = _submit(pool, 1)
    await _settle()
    rest = [_submit(pool, n) for n in (2, 3, 4)]
    await _settle()
    assert len(instance.batches) == 1  # not full, not waited long: they queue
    assert pool.queued == 3
    instance.answer()
    await first
    await _settle()
    assert [len(b) for b in instance.batches] == [3]
    instance.answer()
    assert [(await c).result_json for c in rest] == [b"2", b"3", b"4"]
    assert batch_counts(pool)[-2:] == [2, 4]  # type: ignore[index]


async def test_a_full_batch_is_sent_ahead_but_no_more_than_one() -> None:
    pool, instance = _pool(max_size=2), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    calls = [_submit(pool, n) for n in range(1, 6)]
    await _settle()
    # one running batch (the first call), one full batch sent ahead, the rest wait
    assert [len(b) for b in instance.batches] == [1, 2]
    assert pool.queued == 2
    instance.answer()
    await _settle()
    assert [len(b) for b in instance.batches] == [2, 2]
    for _ in range(2):
        instance.answer()
        await _settle()
    assert [(await c).result_json for c in calls] == [str(n).encode() for n in range(1, 6)]


async def test_a_partial_batch_is_sent_ahead_once_its_oldest_call_waited_enough() -> None:
    pool, instance = _pool(max_size=8, max_wait_ms=20), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    _submit(pool, 1)
    await _settle()
    _submit(pool, 2)
    _submit(pool, 3)
    await _settle()
    assert [len(b) for b in instance.batches] == [1]
    deadline = asyncio.get_running_loop().time() + 5
    while len(instance.batches) < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)
    assert [len(b) for b in instance.batches] == [1, 2]


async def test_past_the_queue_limit_a_call_is_refused_at_once_with_retry_after() -> None:
    pool, instance = _pool(max_size=2, max_queued=1), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    _submit(pool, 1)
    _submit(pool, 2)  # sent ahead is impossible until the batch is full: it waits
    _submit(pool, 3)  # the batch is full: sent ahead
    _submit(pool, 4)  # no room on the instance: 4, 5 and 6 wait (a full batch and 1 more)
    _submit(pool, 5)
    _submit(pool, 6)
    await _settle()
    assert pool.queued == 3
    with pytest.raises(errors.QueueFull) as refused:
        await pool.submit("REQUEST000000007", b"7", 30)
    assert refused.value.headers == {"Retry-After": "1"}


async def test_a_call_that_waits_its_whole_timeout_for_an_instance_gets_a_504() -> None:
    pool, instance = _pool(max_size=8), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    _submit(pool, 1)
    await _settle()
    with pytest.raises(errors.ModelTimeout) as waited:
        await pool.submit("REQUEST000000002", b"2", 0.05)
    assert "waited 0.05 s for a free instance of version 1" in waited.value.message
    assert pool.queued == 0


async def test_calls_waiting_in_a_closed_pool_are_sent_back_to_be_routed_again() -> None:
    pool, instance = _pool(max_size=8), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    _submit(pool, 1)
    await _settle()
    waiting = _submit(pool, 2)
    await _settle()
    pool.close()
    with pytest.raises(errors.CallNotStarted):
        await waiting
    with pytest.raises(errors.CallNotStarted):
        await pool.submit("REQUEST000000003", b"3", 30)


async def test_without_instances_ready_or_starting_a_call_is_a_503() -> None:
    with pytest.raises(errors.NoReadyInstance):
        await _pool().submit("REQUEST000000001", b"1", 30)


async def test_batch_sizes_are_counted_in_their_buckets() -> None:
    pool, instance = _pool(max_size=8), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    _submit(pool, 1)
    await _settle()
    for n in range(2, 7):
        _submit(pool, n)
    await _settle()
    instance.answer()
    await _settle()
    counts = batch_counts(pool)
    assert counts is not None
    by_bound = dict(zip(SIZE_BUCKETS, counts, strict=False))
    assert by_bound[1] == 1  # the first call alone
    assert by_bound[8] == 1  # the five that waited: more than 4, at most 8
    assert counts[-2:] == [2, 6]


async def test_a_caller_that_goes_away_while_it_waits_leaves_the_queue() -> None:
    pool, instance = _pool(max_size=8), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    _submit(pool, 1)
    await _settle()
    waiting = _submit(pool, 2)
    await _settle()
    assert pool.queued == 1
    waiting.cancel()
    await _settle()
    assert pool.queued == 0
    instance.answer()
    await _settle()
    assert instance.batches == []  # nothing was sent for the caller that left


async def test_under_load_the_first_caller_back_waits_for_the_others_answered_lately() -> None:
    pool, instance = _pool(max_size=8, max_wait_ms=10_000), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    first = _submit(pool, 1)
    await _settle()
    rest = [_submit(pool, n) for n in (2, 3, 4)]
    await _settle()
    instance.answer()
    await first
    await _settle()
    instance.answer()  # four calls answered lately: their callers are likely coming back
    await asyncio.gather(*rest)
    again = [_submit(pool, n) for n in (5, 6, 7)]
    await _settle()
    assert instance.batches == []  # the instance is idle, yet three callers wait for a fourth
    assert pool.queued == 3
    again.append(_submit(pool, 8))
    await _settle()
    assert [[c[0][-1] for c in b] for b in instance.batches] == [["5", "6", "7", "8"]]
    instance.answer()
    assert [(await c).result_json for c in again] == [b"5", b"6", b"7", b"8"]


async def test_a_caller_waiting_for_company_that_does_not_come_leaves_after_max_wait() -> None:
    pool, instance = _pool(max_size=8, max_wait_ms=30), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    first = _submit(pool, 1)
    await _settle()
    pair = [_submit(pool, 2), _submit(pool, 3)]
    await _settle()
    instance.answer()
    await first
    # the pair waited for company after the lone first call, at most max_wait_ms
    for _ in range(500):
        if instance.batches:
            break
        await asyncio.sleep(0.005)
    instance.answer()
    await asyncio.gather(*pair)
    alone = _submit(pool, 4)
    await _settle()
    assert instance.batches == []  # the last batch held two: wait for the other caller
    for _ in range(500):  # not forever: it leaves alone once it waited max_wait_ms
        if instance.batches:
            break
        await asyncio.sleep(0.005)
    assert [[c[0][-1] for c in b] for b in instance.batches] == [["4"]]
    instance.answer()
    assert (await alone).result_json == b"4"
    lone_again = _submit(pool, 5)
    await _settle()  # the last batch held one call: a lone caller goes at once again
    assert [[c[0][-1] for c in b] for b in instance.batches] == [["5"]]
    instance.answer()
    await lone_again


async def test_an_idle_instance_does_not_wait_for_callers_of_a_batch_long_finished() -> None:
    pool, instance = _pool(max_size=8, max_wait_ms=20), Instance()
    pool.add(instance)  # type: ignore[arg-type]
    calls = [_submit(pool, n) for n in (1, 2, 3)]
    await _settle()
    instance.answer()  # the first went alone
    await _settle()
    instance.answer()  # then the other two together
    await asyncio.gather(*calls)
    loop = asyncio.get_running_loop()
    finished = loop.time()
    while loop.time() < finished + 0.03:  # the batch's callers did not come back in time
        await asyncio.sleep(0.005)
    late = _submit(pool, 4)
    await _settle()
    assert [[c[0][-1] for c in b] for b in instance.batches] == [["4"]]
    instance.answer()
    await late
