"""The batching dispatch on a loop whose clock the test moves: who gets a batch, when, of what.

Expected answers are docs/api.md's "Batching functions" and docs/architecture.md's
"Batching". The instances are stand-ins at the seam (``send_batch``); the real path, with
worker processes, is ``tests/integration/test_batching.py``. Time is the loop's own clock,
moved by the test, so "after ``max_wait_ms``" is exact and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from modelhost import errors
from modelhost.backends.base import InstanceState
from modelhost.gateway.batching import (
    SIZE_BUCKETS,
    BatchingPool,
    batch_capacity,
    batch_counts,
    limits_of,
    new_pool,
)
from modelhost.gateway.board import LoadBoard
from modelhost.gateway.pool import VersionPool
from modelhost.runtime import protocol

START = 1000.0
#: a step of the clock that floats add exactly (as the waits used here: 1/8, 1/4 s...)
TICK = 1 / 8192


class ClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` moves only when the test says: timers due by then run
    on the next turns of the loop, and none is ever waited for in real time."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START

    def time(self) -> float:
        return self.now


Call = tuple[str, bytes, "asyncio.Future[tuple[int, bytes]]"]


class Instance:
    """Records each batch it is sent, whether it runs now, and its timeout."""

    def __init__(self, name: str = "i") -> None:
        self.name = name
        self.state = InstanceState.READY
        self.batches: list[list[Call]] = []
        self.runs_now: list[bool] = []
        self.timeouts: list[float] = []

    def __repr__(self) -> str:
        return self.name

    def send_batch(self, calls: Any, timeout: float, *, runs_now: bool) -> None:
        self.batches.append(list(calls))
        self.runs_now.append(runs_now)
        self.timeouts.append(timeout)

    def ids(self) -> list[list[int]]:
        return [[int(c[0][1:]) for c in batch] for batch in self.batches]

    def answer(self, index: int = 0, count: int | None = None) -> None:
        """Answer the calls of one batch (all of them, or the first ``count``)."""
        batch = self.batches[index]
        count = len(batch) if count is None else count
        for request_id, body, future in batch[:count]:
            payload = protocol.encode_result(request_id, 2.0, body)[protocol.HEADER.size :]
            future.set_result((protocol.RESULT, payload))
        del batch[:count]
        if not batch:
            del self.batches[index]


def _run(test: Callable[[ClockLoop], Awaitable[None]]) -> None:
    loop = ClockLoop()
    try:
        loop.run_until_complete(test(loop))
    finally:
        loop.run_until_complete(_hang_up())
        loop.close()


async def _hang_up() -> None:
    """Callers still waiting go away, as clients that hang up."""
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)


def _pool(
    max_size: int = 4, max_wait_ms: float = 20, max_queued: int = 100, concurrency: int = 1
) -> BatchingPool:
    return BatchingPool(
        "v", 3, max_queued, concurrency=concurrency, max_size=max_size, max_wait_ms=max_wait_ms
    )


def _with(pool: BatchingPool, *instances: Instance) -> None:
    for instance in instances:
        pool.add(instance)  # type: ignore[arg-type]


def _submit(pool: BatchingPool, n: int, timeout: float = 30) -> asyncio.Task[Any]:
    return asyncio.ensure_future(pool.submit(f"R{n:015d}", str(n).encode(), timeout))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _later(loop: ClockLoop, seconds: float) -> None:
    """What is under way happens now (the calls just submitted are queued at this time),
    then the clock moves on and what is due by then runs."""
    await _settle()
    loop.now += seconds
    await _settle()


# -- an idle instance -------------------------------------------------------------------------


def test_a_call_that_finds_an_instance_idle_runs_at_once_alone() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(), Instance()
        _with(pool, instance)
        call = _submit(pool, 1, timeout=7.5)
        await _settle()
        assert instance.ids() == [[1]]
        assert instance.runs_now == [True]
        assert instance.timeouts == [7.5]
        assert pool.queued == 0
        assert pool.busy == 1
        instance.answer()
        result = await call
        assert (result.result_json, result.model_time_ms) == (b"1", 2.0)
        assert pool.busy == 0

    _run(test)


def test_an_idle_instance_takes_everything_waiting_up_to_max_size() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=3), Instance()
        _with(pool, instance)
        calls = [_submit(pool, n) for n in range(1, 9)]
        await _settle()
        # the first alone (it found the instance idle), then a full batch sent ahead
        assert instance.ids() == [[1], [2, 3, 4]]
        assert instance.runs_now == [True, False]
        assert pool.queued == 4
        instance.answer()
        await _settle()
        # room again: one full batch is sent ahead, the two left wait for company
        assert instance.ids() == [[2, 3, 4], [5, 6, 7]]
        assert pool.queued == 1
        for _ in range(3):
            instance.answer()
            await _settle()
            await _later(loop, 0.02)
        assert [(await c).result_json for c in calls] == [str(n).encode() for n in range(1, 9)]
        assert batch_counts(pool)[-2:] == [4, 8]  # type: ignore[index]

    _run(test)


def test_the_instance_idle_most_recently_gets_the_next_call() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, first, second = _pool(), Instance("first"), Instance("second")
        _with(pool, first, second)
        a = _submit(pool, 1)
        b = _submit(pool, 2)
        await _settle()
        assert len(first.batches) == len(second.batches) == 1  # one each: both were idle
        started_first = first if first.ids() == [[1]] else second
        other = second if started_first is first else first
        other.answer()
        await _settle()
        started_first.answer()  # now the most recently idle
        await asyncio.gather(a, b)
        await _later(loop, 1)
        c = _submit(pool, 3)
        await _settle()
        assert started_first.ids() == [[3]]
        assert other.ids() == []
        started_first.answer()
        await c

    _run(test)


def test_a_busy_instance_is_passed_over_for_an_idle_one() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, first, second = _pool(), Instance("first"), Instance("second")
        _with(pool, first, second)
        _submit(pool, 1)
        await _settle()
        busy = first if first.batches else second
        idle = second if busy is first else first
        _submit(pool, 2)
        await _settle()
        assert idle.ids() == [[2]]
        assert idle.runs_now == [True]
        assert busy.ids() == [[1]]

    _run(test)


# -- while every instance is busy -------------------------------------------------------------


def test_while_busy_calls_queue_and_leave_as_one_batch_when_the_instance_frees_up() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        first = _submit(pool, 1)
        await _settle()
        rest = [_submit(pool, n) for n in (2, 3, 4)]
        await _settle()
        assert instance.ids() == [[1]]
        assert pool.queued == 3
        await _later(loop, 0.25 - TICK)
        assert instance.ids() == [[1]]  # neither full nor waited max_wait_ms: they wait
        instance.answer()
        await first
        await _settle()
        assert instance.ids() == [[2, 3, 4]]
        assert instance.runs_now == [True, True]
        instance.answer()
        assert [(await c).result_json for c in rest] == [b"2", b"3", b"4"]

    _run(test)


def test_a_partial_batch_is_sent_ahead_exactly_when_its_oldest_call_has_waited_max_wait() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        _submit(pool, 2)
        await _later(loop, 0.125)
        _submit(pool, 3)
        await _later(loop, 0.125 - TICK)
        assert instance.ids() == [[1]]  # the oldest waited just under 250 ms
        await _later(loop, TICK)
        assert instance.ids() == [[1], [2, 3]]  # 250 ms: sent ahead, to run next
        assert instance.runs_now == [True, False]
        _submit(pool, 4)
        await _later(loop, 1)
        # the instance holds a running batch and one sent ahead: nothing more goes there
        assert instance.ids() == [[1], [2, 3]]
        assert pool.queued == 1

    _run(test)


def test_a_full_batch_is_sent_ahead_at_once_without_waiting() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=3, max_wait_ms=1000), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        _submit(pool, 2)
        _submit(pool, 3)
        await _settle()
        assert instance.ids() == [[1]]
        _submit(pool, 4)
        await _settle()
        assert instance.ids() == [[1], [2, 3, 4]]

    _run(test)


def test_a_batch_sent_ahead_goes_to_the_least_busy_instance() -> None:
    async def test(loop: ClockLoop) -> None:
        pool = _pool(max_size=2, max_wait_ms=1000)
        first, second = Instance("first"), Instance("second")
        _with(pool, first, second)
        for n in (1, 2):
            _submit(pool, n)
        await _settle()
        assert sorted([first.ids(), second.ids()]) == [[[1]], [[2]]]
        for n in (3, 4):  # a full batch: sent ahead to one of them
            _submit(pool, n)
        await _settle()
        ahead = first if len(first.batches) == 2 else second
        other = second if ahead is first else first
        assert ahead.ids()[1] == [3, 4]
        for n in (5, 6):  # the next full batch: to the one without a batch sent ahead
            _submit(pool, n)
        await _settle()
        assert other.ids()[1] == [5, 6]
        assert other.runs_now == [True, False]
        for n in (7, 8):  # both hold two batches: it waits
            _submit(pool, n)
        await _settle()
        assert pool.queued == 2

    _run(test)


def test_with_concurrency_two_an_instance_runs_two_batches_and_holds_a_third_ahead() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=2, max_wait_ms=1000, concurrency=2), Instance()
        _with(pool, instance)
        assert pool.capacity == 3
        _submit(pool, 1)
        await _settle()
        _submit(pool, 2)
        await _settle()
        assert instance.ids() == [[1], [2]]  # a second thread was free: at once
        assert instance.runs_now == [True, True]
        for n in (3, 4, 5, 6):
            _submit(pool, n)
        await _settle()
        assert instance.ids() == [[1], [2], [3, 4]]
        assert instance.runs_now == [True, True, False]
        assert pool.queued == 2

    _run(test)


def test_an_instance_has_room_again_only_when_the_last_call_of_its_batch_is_answered() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=3, max_wait_ms=1000), Instance()
        _with(pool, instance)
        for n in range(1, 5):
            _submit(pool, n)
        await _settle()
        assert instance.ids() == [[1], [2, 3, 4]]
        instance.answer()
        await _settle()
        for n in range(5, 8):  # a full batch waits for the instance to have room
            _submit(pool, n)
        await _settle()
        assert instance.ids() == [[2, 3, 4], [5, 6, 7]]
        for n in range(8, 11):
            _submit(pool, n)
        await _settle()
        instance.answer(count=2)  # two of three answered: the batch still runs
        await _settle()
        assert pool.queued == 3
        assert pool.busy == 4
        instance.answer(count=1)
        await _settle()
        assert instance.ids() == [[5, 6, 7], [8, 9, 10]]
        assert pool.queued == 0

    _run(test)


# -- under load, an idle instance waits for the last batch's callers --------------------------


async def _batch_of(pool: BatchingPool, instance: Instance, size: int, first: int) -> None:
    """Make the calls answered in the last ``max_wait_ms`` one batch of ``size`` calls,
    answered now (the lone call before it was answered longer ago than that)."""
    lead = _submit(pool, first)
    await _settle()
    rest = [_submit(pool, first + n) for n in range(1, size + 1)]
    await _settle()
    instance.answer()
    await lead
    await _settle()
    assert instance.ids() == [list(range(first + 1, first + size + 1))]
    loop = asyncio.get_running_loop()
    assert isinstance(loop, ClockLoop)
    loop.now += pool.max_wait_ms / 1000 + TICK
    instance.answer()
    await asyncio.gather(*rest)


def test_fewer_calls_than_were_answered_lately_wait_for_the_rest_to_come_back() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 3, first=1)
        _submit(pool, 10)
        _submit(pool, 11)
        await _settle()
        assert instance.ids() == []  # idle, but two callers wait for the third
        await _later(loop, 0.25 - TICK)
        assert instance.ids() == []
        _submit(pool, 12)
        await _settle()
        assert instance.ids() == [[10, 11, 12]]
        assert instance.runs_now[-1] is True

    _run(test)


def test_calls_waiting_for_company_leave_once_the_first_has_waited_max_wait() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 3, first=1)
        await _later(loop, 0.125)
        _submit(pool, 10)
        await _later(loop, 0.0625)
        _submit(pool, 11)
        await _later(loop, 0.1875 - TICK)
        assert instance.ids() == []
        await _later(loop, TICK)  # the first has waited 250 ms
        assert instance.ids() == [[10, 11]]

    _run(test)


def test_as_many_calls_as_were_answered_lately_go_at_once() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 2, first=1)
        _submit(pool, 10)
        await _settle()
        assert instance.ids() == []
        _submit(pool, 11)
        await _settle()
        assert instance.ids() == [[10, 11]]

    _run(test)


def test_a_shorter_max_wait_set_while_calls_wait_lets_them_leave_at_the_new_time() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        _submit(pool, 2)
        _submit(pool, 3)
        await _later(loop, 0.0625)
        assert instance.ids() == [[1]]  # busy: the two wait to be sent ahead at 250 ms
        pool.tune(8, 125)
        await _later(loop, 0.0625 - TICK)
        assert instance.ids() == [[1]]
        await _later(loop, TICK)  # the first has now waited the new 125 ms
        assert instance.ids() == [[1], [2, 3]]

    _run(test)


def test_callers_answered_just_under_max_wait_ago_are_still_waited_for() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 3, first=1)
        await _later(loop, 0.25 - TICK)
        _submit(pool, 10)
        await _settle()
        assert instance.ids() == []  # the three answered 250 ms ago, less a tick, still count
        await _later(loop, TICK)  # now they were answered max_wait ago: no longer expected
        _submit(pool, 11)
        await _settle()
        assert instance.ids() == [[10, 11]]

    _run(test)


def test_an_idle_instance_does_not_wait_for_callers_answered_max_wait_ago() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 3, first=1)
        await _later(loop, 0.25)
        _submit(pool, 10)
        await _settle()
        assert instance.ids() == [[10]]

    _run(test)


def test_a_lone_caller_after_a_batch_of_one_goes_at_once() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=30), Instance()
        _with(pool, instance)
        call = _submit(pool, 1)
        await _settle()
        instance.answer()
        await call
        _submit(pool, 2)
        await _settle()
        assert instance.ids() == [[2]]

    _run(test)


def test_a_lone_caller_calling_again_and_again_never_waits() -> None:
    # Its calls answered lately are one caller's: each next call is that caller back.
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=500), Instance()
        _with(pool, instance)
        for n in range(1, 6):
            call = _submit(pool, n)
            await _settle()
            assert instance.ids() == [[n]], f"call {n} waited"
            await _later(loop, 0.001)
            instance.answer()
            await call

    _run(test)


def test_callers_queued_before_a_batch_was_answered_do_not_stand_in_for_its_callers() -> None:
    # Three callers wait behind a lone call; once all four are answered, the first three back
    # wait for the fourth.
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 3, first=1)
        loop.now -= pool.max_wait_ms / 1000  # all four answered just now
        for n in (10, 11, 12):
            _submit(pool, n)
        await _settle()
        assert instance.ids() == []
        _submit(pool, 13)
        await _settle()
        assert instance.ids() == [[10, 11, 12, 13]]

    _run(test)


def test_a_full_batch_never_waits_for_company() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        await _batch_of(pool, instance, 4, first=1)
        pool.tune(2, 250)
        _submit(pool, 20)
        await _settle()
        assert instance.ids() == []  # waits for the callers answered lately
        _submit(pool, 21)
        await _settle()
        # fewer than the last batch held, but max_size: a full batch goes at once
        assert instance.ids() == [[20, 21]]

    _run(test)


# -- answers, errors and limits ---------------------------------------------------------------


def test_each_call_of_a_batch_gets_its_own_answer_and_only_a_failed_one_fails() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8), Instance()
        _with(pool, instance)
        first = _submit(pool, 1)
        await _settle()
        calls = [_submit(pool, n) for n in (2, 3, 4)]
        await _settle()
        instance.answer()
        await first
        await _settle()
        (batch,) = instance.batches
        error = json.dumps({"code": "model_error", "message": "ValueError: bad row"}).encode()
        for request_id, body, future in batch:
            if body == b"3":
                payload = protocol.encode_error(request_id, error)[protocol.HEADER.size :]
                future.set_result((protocol.ERROR, payload))
            else:
                payload = protocol.encode_result(request_id, 4.0, body)[protocol.HEADER.size :]
                future.set_result((protocol.RESULT, payload))
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert done[0].result_json == b"2"
        assert isinstance(done[1], errors.ModelError)
        assert done[1].message == "ValueError: bad row"
        assert done[2].result_json == b"4"

    _run(test)


def test_the_queue_takes_a_full_batch_and_max_queued_calls_more_then_refuses_with_retry_after() -> (
    None
):
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=4, max_queued=2), Instance()
        _with(pool, instance)
        _submit(pool, 1)  # runs
        await _settle()
        for n in range(2, 6):  # a full batch: sent ahead
            _submit(pool, n)
        await _settle()
        assert instance.ids() == [[1], [2, 3, 4, 5]]
        for n in range(6, 12):  # 4 + 2 wait
            _submit(pool, n)
        await _settle()
        assert pool.queued == 6
        with pytest.raises(errors.QueueFull) as refused:
            await pool.submit("R000000000000012", b"12", 30)
        assert refused.value.status == 503
        assert refused.value.headers == {"Retry-After": "1"}
        assert refused.value.message == (
            "All instances of version 3 are busy and 6 calls are already waiting; retry "
            "shortly or add instances."
        )
        assert pool.queued == 6

    _run(test)


def test_a_call_waits_its_timeout_for_an_instance_then_gets_a_504_and_leaves_the_queue() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=5000), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        waiting = _submit(pool, 2, timeout=2.5)
        other = _submit(pool, 3, timeout=60)
        await _later(loop, 2.5 - TICK)
        assert not waiting.done()
        await _later(loop, TICK)
        with pytest.raises(errors.ModelTimeout) as waited:
            await waiting
        assert waited.value.message == (
            "The call waited 2.5 s for a free instance of version 3; add instances or make "
            "the function faster."
        )
        assert pool.queued == 1
        assert not other.done()

    _run(test)


def test_a_call_sent_before_its_timeout_is_not_failed_by_the_queues_timer() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=5000), Instance()
        _with(pool, instance)
        first = _submit(pool, 1)
        await _settle()
        second = _submit(pool, 2, timeout=1)
        await _settle()
        instance.answer()
        await first
        await _settle()
        assert instance.ids() == [[2]]
        await _later(loop, 5)  # the instance's own clock judges it now, not the queue
        assert not second.done()
        instance.answer()
        assert (await second).result_json == b"2"

    _run(test)


def test_a_caller_that_goes_away_leaves_the_queue_and_the_others_keep_their_order() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        calls = {n: _submit(pool, n) for n in (2, 3, 4)}
        await _settle()
        calls[3].cancel()
        await _settle()
        assert pool.queued == 2
        instance.answer()
        await _settle()
        assert instance.ids() == [[2, 4]]

    _run(test)


def test_new_limits_apply_to_the_calls_already_waiting() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=5000), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        for n in (2, 3, 4):
            _submit(pool, n)
        await _settle()
        assert instance.ids() == [[1]]
        pool.tune(3, 10)
        await _settle()
        assert instance.ids() == [[1], [2, 3, 4]]  # now a full batch
        assert limits_of(pool) == (3, 10)

    _run(test)


def test_a_shorter_wait_applies_to_the_calls_already_waiting() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=5000), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        _submit(pool, 2)
        await _later(loop, 0.02)
        pool.tune(8, 10)
        await _settle()
        assert instance.ids() == [[1], [2]]

    _run(test)


def test_calls_wait_for_an_instance_that_is_starting_and_fail_with_503_when_none_is() -> None:
    async def test(loop: ClockLoop) -> None:
        pool = _pool(max_size=8)
        pool.set_starting(1)
        waiting = _submit(pool, 1)
        await _settle()
        assert pool.queued == 1
        instance = Instance()
        _with(pool, instance)
        await _settle()
        assert instance.ids() == [[1]]
        pool.remove(instance)  # type: ignore[arg-type]
        pool.set_starting(1)
        again = _submit(pool, 2)
        await _settle()
        pool.set_starting(0)
        with pytest.raises(errors.NoReadyInstance):
            await again
        assert pool.queued == 0
        instance.answer()
        await waiting

    _run(test)


def test_without_instances_ready_or_starting_a_call_is_refused_with_503() -> None:
    async def test(loop: ClockLoop) -> None:
        with pytest.raises(errors.NoReadyInstance) as refused:
            await _pool().submit("R000000000000001", b"1", 30)
        assert refused.value.headers == {"Retry-After": "1"}

    _run(test)


def test_while_an_instance_is_ready_and_none_starting_calls_still_queue() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        waiting = _submit(pool, 2)
        await _settle()
        pool.set_starting(0)
        await _settle()
        assert not waiting.done()
        assert pool.queued == 1

    _run(test)


def test_closing_the_pool_sends_waiting_calls_back_and_stops_its_wait_timer() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=10), Instance()
        _with(pool, instance)
        _submit(pool, 1)
        await _settle()
        waiting = _submit(pool, 2)
        await _settle()
        pool.close()
        with pytest.raises(errors.CallNotStarted):
            await waiting
        assert pool.queued == 0
        # no timer left behind: only the caller's own timeout and nothing of the pool's
        assert not [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        with pytest.raises(errors.CallNotStarted):
            await pool.submit("R000000000000003", b"3", 30)

    _run(test)


def test_a_batch_finished_by_an_instance_that_is_no_longer_ready_takes_it_out() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8), Instance()
        _with(pool, instance)
        call = _submit(pool, 1)
        await _settle()
        instance.state = InstanceState.EXITED
        instance.answer()
        await call
        assert pool.ready_count == 0
        assert pool.starting == 1  # its replacement is awaited

    _run(test)


# -- counts and the pool's kind ---------------------------------------------------------------


def test_batch_sizes_are_counted_in_the_smallest_bucket_that_holds_them() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=2000, max_wait_ms=5000, max_queued=5000), Instance()
        _with(pool, instance)
        for size in (1, 2, 3, 4, 5, 1024, 1025):
            start = 10_000 * size
            lead = _submit(pool, start)
            await _settle()
            instance.answer()
            await lead
            await _later(loop, 10)
            blocker = _submit(pool, start + 1)
            await _settle()
            calls = [_submit(pool, start + 2 + n) for n in range(size)]
            await _settle()
            instance.answer()
            await blocker
            await _settle()
            instance.answer()
            await asyncio.gather(*calls)
            await _later(loop, 10)
        counts = batch_counts(pool)
        assert counts is not None
        by_bound = dict(zip(SIZE_BUCKETS, counts[: len(SIZE_BUCKETS)], strict=True))
        # the lone calls: 14 batches of one; then 2, 3 and 4, 5, 1024 and 1025 (the last bucket)
        assert by_bound == {
            1: 15,
            2: 1,
            4: 2,
            8: 1,
            16: 0,
            32: 0,
            64: 0,
            128: 0,
            256: 0,
            512: 0,
            1024: 2,
        }
        assert counts[-2:] == [21, 14 + 1 + 2 + 3 + 4 + 5 + 1024 + 1025]

    _run(test)


def test_a_batching_version_gets_a_batching_pool_and_any_other_a_plain_one() -> None:
    plain = new_pool("v", 2, 10, 3, None, concurrency=2)
    assert type(plain) is VersionPool
    assert (plain.version_id, plain.number, plain.max_queued, plain.capacity) == ("v", 2, 10, 3)
    assert batch_counts(plain) is None
    assert limits_of(plain) is None
    batching = new_pool("w", 4, 20, 3, (16, 2.5), concurrency=2)
    assert isinstance(batching, BatchingPool)
    assert (batching.version_id, batching.number, batching.max_queued) == ("w", 4, 20)
    assert batching.capacity == 3  # two running, one sent ahead
    assert batching.concurrency == 2
    assert limits_of(batching) == (16, 2.5)
    assert batch_counts(batching) == [0] * (len(SIZE_BUCKETS) + 2)
    assert batching.batching
    assert batch_capacity(1) == 2
    assert batch_capacity(4) == 5
    assert batching.take() is None  # every call goes through submit


def test_a_pool_that_lost_every_instance_batches_again_once_a_new_one_is_ready() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, first = _pool(max_size=8, max_wait_ms=250), Instance("first")
        _with(pool, first)
        _submit(pool, 1)
        await _settle()
        waiting = _submit(pool, 2)
        await _settle()
        pool.remove(first)  # type: ignore[arg-type]
        pool.set_starting(0)
        with pytest.raises(errors.NoReadyInstance):
            await waiting
        second = Instance("second")
        _with(pool, second)
        _submit(pool, 3)
        await _settle()
        _submit(pool, 4)
        await _later(loop, 0.25)
        assert second.ids() == [[3], [4]]

    _run(test)


@pytest.mark.parametrize("batch", [None, (4, 250.0)], ids=["plain", "batching"])
def test_a_pool_tells_the_other_gateway_processes_whether_its_instance_is_idle(
    batch: tuple[int, float] | None,
) -> None:
    async def test(loop: ClockLoop) -> None:
        board = LoadBoard(3)
        slot = board.slot()
        pool = new_pool("v", 3, 10, 1, batch, board=board, slot=slot, process=2)
        instance = Instance()
        pool.add(instance)  # type: ignore[arg-type]
        # what process 0, whose own instance is busy, reads: process 2 has an idle one
        assert board.less_busy(slot, 0, 1) == 2
        if isinstance(pool, BatchingPool):
            call = _submit(pool, 1)  # type: ignore[arg-type]
            await _settle()
            assert board.less_busy(slot, 0, 1) is None  # busy now
            instance.answer()
            await call
        else:
            taken = pool.take()
            assert board.less_busy(slot, 0, 1) is None
            pool.release(taken)  # type: ignore[arg-type]
        assert board.less_busy(slot, 0, 1) == 2
        pool.close()
        assert board.less_busy(slot, 0, None) is None  # it holds nothing any more

    _run(test)


def test_a_pool_made_without_a_process_number_is_the_main_process_s() -> None:
    board = LoadBoard(2)
    slot = board.slot()
    for batch in (None, (4, 250.0)):
        pool = new_pool("v", 3, 10, 1, batch, board=board, slot=slot)
        pool.add(Instance())  # type: ignore[arg-type]
        assert board.less_busy(slot, 1, 1) == 0
        pool.close()


def test_a_batching_pool_admits_no_call_but_through_submit() -> None:
    async def test(loop: ClockLoop) -> None:
        pool = _pool()
        _with(pool, Instance())
        with pytest.raises(
            AssertionError, match=r"^a batching pool's calls go through submit\(\)$"
        ):
            await pool.acquire(1)
        assert pool.take() is None

    _run(test)


class _PlainHandle:
    """What uvloop's ``call_at`` hands back for a time already past: a handle that can be
    cancelled, without ``when()``."""

    _source_traceback = None  # what asyncio's call_later reads of the handle call_at made

    def __init__(self, timer: asyncio.TimerHandle) -> None:
        self._timer = timer

    def cancel(self) -> None:
        self._timer.cancel()


class PlainHandleLoop(ClockLoop):
    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        return _PlainHandle(super().call_at(when, callback, *args, context=context))


def test_the_wait_timer_works_with_handles_that_do_not_say_when_they_are_due() -> None:
    async def test(loop: ClockLoop) -> None:
        pool, instance = _pool(max_size=8, max_wait_ms=250), Instance()
        _with(pool, instance)
        first = _submit(pool, 1)
        await _settle()
        waiting = [_submit(pool, n) for n in (2, 3, 4)]  # each one dispatches again
        await _settle()
        assert instance.ids() == [[1]]
        loop.now += 0.25  # the oldest waited max_wait_ms: sent ahead
        await _settle()
        assert instance.ids() == [[1], [2, 3, 4]]
        instance.answer()
        instance.answer()
        assert [(await c).result_json for c in [first, *waiting]] == [b"1", b"2", b"3", b"4"]

    loop = PlainHandleLoop()
    try:
        loop.run_until_complete(test(loop))
    finally:
        loop.run_until_complete(_hang_up())
        loop.close()
