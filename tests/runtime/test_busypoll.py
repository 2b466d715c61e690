"""How an instance waits for its next call (``runtime/busypoll.py``; docs/architecture.md,
"Waiting for the next call"): after an answer it polls for up to the budget when its calls
come that close together and the machine has a core to spare, and otherwise sleeps in
``recv``.

A real socket pair; the only stand-ins are the recording wrapper around the instance's end
(to see which reads polled) and, for ``IdleCores``, a file in ``/proc/uptime``'s format with a
clock the test moves.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.runtime import busypoll


class Recording:
    """The instance's end of the connection, noting the flags of each read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.flags: list[int] = []

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.flags.append(flags)
        return self.sock.recv(size, flags)

    def polled(self) -> bool:
        """Whether any read since the last call of this polled, and forget them."""
        polled = socket.MSG_DONTWAIT in self.flags
        self.flags.clear()
        return polled


class Spare(busypoll.IdleCores):
    """A machine that always, or never, has a core to spare."""

    def __init__(self, spare: bool) -> None:
        super().__init__()
        self.answer = spare
        self.polled_seconds = 0.0

    def spare(self) -> bool:
        return self.answer

    def polled(self, seconds: float) -> None:
        self.polled_seconds += seconds


@pytest.fixture
def pair() -> Iterator[tuple[Recording, socket.socket]]:
    ours, theirs = socket.socketpair()
    theirs.settimeout(10)  # ours stays blocking, as an instance's connection is
    yield Recording(ours), theirs
    ours.close()
    theirs.close()


def _send_later(sock: socket.socket, data: bytes, delay: float) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)  # the gap between the answer and the next call is the input here
        sock.sendall(data)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _close_calls(receiver: busypoll.Receiver, caller: socket.socket) -> None:
    """Two calls, the second sent right after the answer to the first: the calls now come
    close together."""
    caller.sendall(b"first")
    assert receiver.recv() == b"first"
    receiver.answered()
    caller.sendall(b"second")
    assert receiver.recv() == b"second"
    receiver.answered()


def test_a_call_that_follows_its_answer_closely_is_polled_for(
    pair: tuple[Recording, socket.socket],
) -> None:
    ours, caller = pair
    idle = Spare(True)
    receiver = busypoll.Receiver(ours, 1024, budget=0.5, idle=idle)
    _close_calls(receiver, caller)
    ours.flags.clear()
    sender = _send_later(caller, b"third", 0.002)
    assert receiver.recv() == b"third"
    sender.join()
    assert ours.flags[-1] == socket.MSG_DONTWAIT  # it came while polling, not to a sleeper
    assert idle.polled_seconds > 0  # the polling is counted as the machine's idle time


def test_the_first_call_and_calls_far_apart_are_waited_for_asleep(
    pair: tuple[Recording, socket.socket],
) -> None:
    ours, caller = pair
    receiver = busypoll.Receiver(ours, 1024, budget=0.001, idle=Spare(True))
    caller.sendall(b"first")
    assert receiver.recv() == b"first"
    assert not ours.polled()
    receiver.answered()
    sender = _send_later(caller, b"late", 0.05)  # 50 ms after the answer, budget 1 ms
    assert receiver.recv() == b"late"
    sender.join()
    receiver.answered()
    sender = _send_later(caller, b"next", 0.0)
    assert receiver.recv() == b"next"
    sender.join()
    assert not ours.polled()  # the call before came far after its answer


def test_no_polling_while_the_machine_has_no_core_to_spare(
    pair: tuple[Recording, socket.socket],
) -> None:
    ours, caller = pair
    receiver = busypoll.Receiver(ours, 1024, budget=0.5, idle=Spare(False))
    _close_calls(receiver, caller)
    ours.flags.clear()
    sender = _send_later(caller, b"third", 0.002)
    assert receiver.recv() == b"third"
    sender.join()
    assert not ours.polled()


def test_polling_ends_at_the_budget_and_the_instance_sleeps_until_the_call(
    pair: tuple[Recording, socket.socket],
) -> None:
    ours, caller = pair
    receiver = busypoll.Receiver(ours, 1024, budget=0.002, idle=Spare(True))
    _close_calls(receiver, caller)
    ours.flags.clear()
    sender = _send_later(caller, b"after a pause", 0.1)
    assert receiver.recv() == b"after a pause"
    sender.join()
    assert socket.MSG_DONTWAIT in ours.flags  # it polled first ...
    assert ours.flags[-1] == 0  # ... then slept until the call came


def test_a_budget_of_zero_never_polls(pair: tuple[Recording, socket.socket]) -> None:
    ours, caller = pair
    receiver = busypoll.Receiver(ours, 1024, budget=0.0)
    _close_calls(receiver, caller)
    sender = _send_later(caller, b"third", 0.0)
    assert receiver.recv() == b"third"
    sender.join()
    assert not ours.polled()
    assert receiver.described == "sleeps until each call (it never polls)"


def test_the_server_closing_the_connection_ends_a_poll(
    pair: tuple[Recording, socket.socket],
) -> None:
    ours, caller = pair
    receiver = busypoll.Receiver(ours, 1024, budget=0.5, idle=Spare(True))
    _close_calls(receiver, caller)
    caller.close()
    assert receiver.recv() == b""  # what tells the worker to stop


# --------------------------------------------------------------------------- IdleCores


class Uptime:
    """A file in /proc/uptime's format ("seconds up, seconds all cores idle") and a clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = 100.0
        self.idle = 150.0
        self.write()

    def write(self) -> None:
        self.path.write_text(f"{self.now:.2f} {self.idle:.2f}\n")

    def advance(self, seconds: float, idle_cores: float) -> None:
        self.now += seconds
        self.idle += seconds * idle_cores
        self.write()

    def clock(self) -> float:
        return self.now


@pytest.fixture
def uptime(tmp_path: Path) -> Uptime:
    return Uptime(tmp_path / "uptime")


def test_a_core_is_spare_when_most_of_one_was_idle_over_the_window(uptime: Uptime) -> None:
    idle = busypoll.IdleCores(str(uptime.path), clock=uptime.clock)
    assert not idle.spare()  # nothing measured yet
    uptime.advance(busypoll.WINDOW, idle_cores=1.2)
    assert idle.spare()
    uptime.advance(busypoll.WINDOW, idle_cores=0.3)
    assert not idle.spare()


def test_the_instances_own_polling_counts_as_idle(uptime: Uptime) -> None:
    idle = busypoll.IdleCores(str(uptime.path), clock=uptime.clock)
    idle.polled(busypoll.WINDOW * 0.5)  # half a core of the window was this process polling
    uptime.advance(busypoll.WINDOW, idle_cores=0.4)
    assert idle.spare()  # 0.4 idle + 0.5 polling: 0.9 of a core would have been idle


def test_the_answer_holds_until_the_window_has_passed(uptime: Uptime) -> None:
    idle = busypoll.IdleCores(str(uptime.path), clock=uptime.clock)
    uptime.advance(busypoll.WINDOW, idle_cores=2.0)
    assert idle.spare()
    uptime.advance(busypoll.WINDOW / 4, idle_cores=0.0)
    assert idle.spare()  # a quarter of a window is not a measurement
    uptime.advance(busypoll.WINDOW, idle_cores=0.0)
    assert not idle.spare()


def test_without_a_readable_uptime_there_is_never_a_core_to_spare(tmp_path: Path) -> None:
    idle = busypoll.IdleCores(str(tmp_path / "missing"))
    assert not idle.readable
    assert not idle.spare()
    garbled = tmp_path / "garbled"
    garbled.write_text("not numbers\n")
    assert not busypoll.IdleCores(str(garbled)).readable
    ours, theirs = socket.socketpair()
    with ours, theirs:
        receiver = busypoll.Receiver(ours, 1024, budget=0.5, idle=idle)
        assert receiver.described.startswith("sleeps until each call: it cannot read")


def test_this_machine_says_how_idle_its_cores_are() -> None:
    """/proc/uptime is what instances read, in the sandbox too (its own /proc)."""
    idle = busypoll.IdleCores()
    assert idle.readable
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert busypoll.Receiver(ours, 1024, budget=0.0005, idle=idle).described == (
            "polls up to 500 us for a call that follows an answer closely, while the machine "
            "has a core to spare"
        )
