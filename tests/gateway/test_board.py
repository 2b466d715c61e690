"""The load board: every process says how busy its least busy instance of each version is, and a
process whose own instances are all busy finds one that has an idle (or less busy) one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from modelhost.backends.base import InstanceState
from modelhost.gateway.board import NO_SLOT, SLOTS, LoadBoard
from modelhost.gateway.peers import PASSED, Peers
from modelhost.gateway.pool import VersionPool

pytestmark = pytest.mark.anyio


class Stub:
    def __init__(self) -> None:
        self.state = InstanceState.READY
        self.inflight = 0


def _shared(processes: int) -> tuple[LoadBoard, LoadBoard]:
    """The main process's board and a gateway process's view of the same memory."""
    main = LoadBoard(processes)
    other = LoadBoard(processes, fd=os.dup(main.fd))
    return main, other


def test_a_process_sees_another_process_s_idle_instance_through_the_shared_memory() -> None:
    main, gateway = _shared(2)
    slot = main.slot()
    main.set(slot, 0, 1)  # the main process's only instance has one call
    gateway.set(slot, 1, 0)  # the gateway process's instance is idle
    assert main.less_busy(slot, 0, 1) == 1
    # The gateway process's own instance is the least busy: nowhere better to go.
    assert gateway.less_busy(slot, 1, 0) is None


def test_a_process_holding_no_instance_of_the_version_is_never_chosen() -> None:
    main, gateway = _shared(3)
    slot = main.slot()
    main.set(slot, 0, 2)
    gateway.set(slot, 1, None)
    assert main.less_busy(slot, 0, 2) is None
    gateway.set(slot, 2, 0)
    assert main.less_busy(slot, 0, 2) == 2


def test_a_call_is_passed_only_to_an_idle_instance_never_to_a_merely_less_busy_one() -> None:
    # Under load every instance is busy: each process sends its calls ahead to its own, since
    # a pass costs more than it saves.
    board = LoadBoard(4)
    slot = board.slot()
    board.set(slot, 0, 3)
    board.set(slot, 1, 2)
    board.set(slot, 2, 1)
    board.set(slot, 3, 2)
    assert board.less_busy(slot, 0, 3) is None
    board.set(slot, 3, 0)
    assert board.less_busy(slot, 0, 3) == 3
    # A process with an idle instance of its own keeps the call.
    assert board.less_busy(slot, 3, 0) is None


def test_a_process_holding_no_instance_passes_to_the_least_busy_process() -> None:
    board = LoadBoard(3)
    slot = board.slot()
    board.set(slot, 1, 4)
    board.set(slot, 2, 2)
    assert board.less_busy(slot, 0, None) == 2


def test_calls_already_passed_to_a_process_count_before_it_takes_them() -> None:
    board = LoadBoard(3)
    slot = board.slot()
    board.set(slot, 0, 1)
    board.set(slot, 1, 0)  # idle, as far as its cell says
    board.set(slot, 2, 0)
    assert board.less_busy(slot, 0, 1) == 1
    # One call is on its way to process 1: the next goes to process 2, idle too.
    assert board.less_busy(slot, 0, 1, {1: 1}) == 2
    # With one on its way to each, none is idle any more: the call stays here.
    assert board.less_busy(slot, 0, 1, {1: 1, 2: 1}) is None
    # Once process 1 took its call and answered it, its cell says idle again.
    assert board.less_busy(slot, 0, 1, {2: 1}) == 1


def test_a_freed_slot_is_handed_out_again_cleared() -> None:
    board = LoadBoard(2)
    slot = board.slot()
    board.set(slot, 1, 0)
    board.free(slot)
    again = board.slot()
    assert again == slot
    assert board.less_busy(again, 0, 5) is None


def test_versions_past_the_board_s_slots_share_one_that_never_steers() -> None:
    board = LoadBoard(2)
    slots = {board.slot() for _ in range(SLOTS + 3)}
    assert NO_SLOT in slots
    assert len(slots) == SLOTS
    board.set(NO_SLOT, 1, 0)
    assert board.less_busy(NO_SLOT, 0, 9) is None


def test_a_very_busy_instance_saturates_its_cell_rather_than_wrapping_to_idle() -> None:
    board = LoadBoard(2)
    slot = board.slot()
    board.set(slot, 1, 1000)
    assert board.less_busy(slot, 0, 1000) is None
    assert board.less_busy(slot, 0, 2000) is None  # 255 is the most a cell says
    assert board.less_busy(slot, 0, None) == 1  # but even that beats holding no instance


async def test_a_pool_keeps_its_cell_in_step_with_its_instances_calls() -> None:
    main, gateway = _shared(2)
    slot = main.slot()
    pool = VersionPool("v", 1, max_queued=5, board=gateway, slot=slot, process=1)
    # The main process's instance is busy with one call.
    main.set(slot, 0, 1)
    assert main.less_busy(slot, 0, 1) is None  # the gateway process holds nothing yet
    first, second = Stub(), Stub()
    pool.add(first)  # type: ignore[arg-type]
    assert main.less_busy(slot, 0, 1) == 1
    taken = await pool.acquire(1)
    assert main.less_busy(slot, 0, 1) is None  # now as busy as the main process's
    pool.add(second)  # type: ignore[arg-type]
    assert main.less_busy(slot, 0, 1) == 1
    pool.release(taken)
    pool.remove(first)  # type: ignore[arg-type]
    pool.remove(second)  # type: ignore[arg-type]
    assert main.less_busy(slot, 0, 1) is None
    pool.add(first)  # type: ignore[arg-type]
    pool.close()  # its route moved away: it steers no call any more
    assert main.less_busy(slot, 0, 1) is None


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"headers": list(headers)}


@contextlib.asynccontextmanager
async def _process(
    tmp_path: object, process: int
) -> AsyncIterator[tuple[LoadBoard, int, Peers, VersionPool]]:
    """Process ``process`` of two: the board, its version's slot, its peers and its pool."""
    board = LoadBoard(2)
    slot = board.slot()
    peers = Peers(board, process, str(tmp_path), "secret")
    pool = VersionPool("v", 1, max_queued=5, board=board, slot=slot, process=process)
    try:
        yield board, slot, peers, pool
    finally:
        await peers.close()


async def test_a_call_is_passed_only_when_this_process_has_no_idle_instance(
    tmp_path: object,
) -> None:
    async with _process(tmp_path, 0) as (board, slot, peers, pool):
        board.set(slot, 1, 0)  # the other process has an idle instance
        instance = Stub()
        pool.add(instance)  # type: ignore[arg-type]
        assert peers.less_busy(pool, _scope()) is None  # an idle one here: keep the call
        await pool.acquire(1)
        assert peers.less_busy(pool, _scope()) == 1
        # A call another process passed here is never passed on again.
        assert peers.less_busy(pool, _scope((PASSED, b"1"))) is None


async def test_a_process_holding_no_instance_passes_the_call_to_one_that_does(
    tmp_path: object,
) -> None:
    async with _process(tmp_path, 1) as (board, slot, peers, pool):
        board.set(slot, 0, 4)  # even a busy instance beats none
        assert peers.less_busy(pool, _scope()) == 0


def test_a_process_that_died_is_forgotten_in_every_slot() -> None:
    main, gateway = _shared(2)
    first, second = main.slot(), main.slot()
    gateway.set(first, 1, 0)
    gateway.set(second, 1, 0)
    main.forget(1)
    assert main.less_busy(first, 0, 3) is None
    assert main.less_busy(second, 0, 3) is None


async def test_a_call_for_a_process_that_is_not_there_comes_back_unanswered(
    tmp_path: object,
) -> None:
    # Process 1 died, or its successor has not bound its socket yet: nobody listens there.
    sent: list[object] = []

    async def send(message: object) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        raise AssertionError("the body was read already")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/models/m/latest/model",
        "headers": [],
        "client": ("127.0.0.1", 5000),
    }
    async with _process(tmp_path, 0) as (_, _, peers, pool):
        assert await peers.pass_on(pool, 1, scope, receive, send, b"{}") is False
    assert sent == []  # nothing answered: this process serves the call itself


async def test_calls_too_short_to_be_worth_a_pass_stay_in_their_process(tmp_path: object) -> None:
    async with _process(tmp_path, 0) as (board, slot, peers, pool):
        board.set(slot, 1, 0)  # the other process has an idle instance
        pool.add(Stub())  # type: ignore[arg-type]
        await pool.acquire(1)  # and this one's is busy
        assert peers.less_busy(pool, _scope()) == 1  # nothing measured yet: pass
        for _ in range(20):
            pool.observe(0.0002)  # calls of a fifth of a millisecond
        assert peers.less_busy(pool, _scope()) is None
        for _ in range(20):
            pool.observe(1.0)  # calls of a second
        assert peers.less_busy(pool, _scope()) == 1
