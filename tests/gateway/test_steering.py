"""Steering connections: a new connection whose first call goes to a version this process holds
no instance of moves, socket and bytes read so far, to the process that holds one; the process
that takes it reads those bytes first, then the rest of the connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelhost.gateway.board import NO_SLOT, LoadBoard
from modelhost.gateway.steering import MAX_STEERED_BYTES, Steering

pytestmark = pytest.mark.anyio

CALL = b"POST /models/iris/latest/model HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


def _board_with(cells: dict[int, int]) -> tuple[LoadBoard, int]:
    """A board of three processes with one version's row: process -> its cell."""
    board = LoadBoard(3)
    slot = board.slot()
    for process, lowest in cells.items():
        board.set(slot, process, lowest)
    return board, slot


_made: list[Steering] = []


@pytest.fixture(autouse=True)
def _closed() -> Iterator[None]:
    yield
    while _made:
        _made.pop().close()


def _steering(tmp_path: Path, board: LoadBoard, process: int, slot: int | None) -> Steering:
    """Process ``process``'s steering, where only the iris URL routes to a version (``slot``)."""
    steering = Steering(board, process, str(tmp_path), {"/models/iris/latest/model": slot}.get)
    _made.append(steering)
    return steering


def test_a_connection_goes_to_the_least_busy_process_holding_the_version(tmp_path: Path) -> None:
    board, slot = _board_with({1: 3, 2: 0})  # process 1's instance has 3 calls, 2's is idle
    assert _steering(tmp_path, board, 0, slot).target(CALL) == 2


def test_a_connection_stays_where_an_instance_of_its_version_is_held(tmp_path: Path) -> None:
    board, slot = _board_with({0: 5, 1: 0})  # even a busy one here: no move
    assert _steering(tmp_path, board, 0, slot).target(CALL) is None


def test_a_connection_stays_when_no_process_holds_its_version(tmp_path: Path) -> None:
    board, slot = _board_with({})
    assert _steering(tmp_path, board, 0, slot).target(CALL) is None
    assert _steering(tmp_path, board, 1, NO_SLOT).target(CALL) is None


@pytest.mark.parametrize(
    "first",
    [
        b"GET /api/v1/models HTTP/1.1\r\n\r\n",  # not an invocation
        b"GET /models/iris/latest/model HTTP/1.1\r\n\r\n",  # not a POST
        b"POST /models/iris/latest/mo",  # the request line has not ended
        b"POST /models/ir%69s/latest/model HTTP/1.1\r\n\r\n",  # encoded: left to the gateway
        b"POST /models/other/latest/model HTTP/1.1\r\n\r\n",  # routes to no running version
        CALL + b" " * MAX_STEERED_BYTES,  # too much for one message
    ],
)
def test_a_connection_whose_first_bytes_are_not_a_routable_call_stays(
    tmp_path: Path, first: bytes
) -> None:
    board, slot = _board_with({1: 0})
    assert _steering(tmp_path, board, 0, slot).target(first) is None


def test_the_query_string_is_not_part_of_the_path_that_is_routed(tmp_path: Path) -> None:
    board, slot = _board_with({1: 0})
    steering = _steering(tmp_path, board, 0, slot)
    call = CALL.replace(b"/model HTTP", b"/model?trace=1 HTTP")
    assert steering.target(call) == 1


def test_handing_to_a_process_that_does_not_listen_fails_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    board, slot = _board_with({1: 0})
    steering = _steering(tmp_path, board, 0, slot)
    left, right = socket.socketpair()
    with left, right:
        assert steering.hand(1, left.fileno(), CALL) is False
        assert steering.handed == 0
        # the connection is untouched: it still carries bytes both ways
        right.sendall(b"ping")
        assert left.recv(4) == b"ping"


class _Recorder(asyncio.Protocol):
    """What the taking process's HTTP protocol would be: it records what it reads, in order."""

    def __init__(self) -> None:
        self.steered_bytes: bytes | None = None
        self.received = bytearray()
        self.made = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.steered_bytes is not None:
            self.received += self.steered_bytes
        self.made.set()

    def data_received(self, data: bytes) -> None:
        self.received += data


async def test_a_handed_connection_is_served_by_the_other_process_bytes_first(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    board, slot = _board_with({1: 0})
    here = _steering(tmp_path, board, 0, slot)
    there = _steering(tmp_path, board, 1, slot)
    taken: list[_Recorder] = []

    def make() -> _Recorder:
        taken.append(_Recorder())
        return taken[-1]

    there.start(loop, make)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        client.sendall(CALL)
        first = accepted.recv(len(CALL))
        assert first == CALL
        assert here.target(first) == 1
        assert here.hand(1, accepted.fileno(), first) is True
        accepted.close()  # this process forgets it; the connection lives on over there
        client.sendall(b"next")
        await asyncio.wait_for(_until(lambda: bool(taken) and b"next" in taken[0].received), 5)
        assert bytes(taken[0].received) == CALL + b"next"
        assert (here.handed, there.taken) == (1, 1)
        # and the other process answers on the very connection the client opened
        assert taken[0].transport is not None
        taken[0].transport.write(b"answer")
        client.settimeout(5)
        assert client.recv(6) == b"answer"
        taken[0].transport.close()
    finally:
        client.close()
        listener.close()


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
