"""The gathering transport: what a response writes in one loop turn reaches the socket once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from modelhost.gateway.cycle import InvocationCycle
from modelhost.gateway.transport import Answering, GatheringTransport

pytestmark = pytest.mark.anyio


class RecordingTransport:
    """Stands in for a socket transport: records each write it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def _turn() -> None:
    await asyncio.sleep(0)


async def test_writes_made_in_one_turn_reach_the_socket_as_one_write() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
    gathering.write(b'{"result":3}')
    assert real.writes == []
    await _turn()
    assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"result":3}']


async def test_writes_in_later_turns_are_written_separately_and_in_order() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    for chunk in (b"a", b"b", b"c"):
        gathering.write(chunk)
        await _turn()
    assert real.writes == [b"a", b"b", b"c"]


async def test_close_sends_what_was_gathered_before_closing() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"last words")
    gathering.close()
    assert real.writes == [b"last words"]
    assert real.closed
    await _turn()  # the flush scheduled by the write finds nothing left
    assert real.writes == [b"last words"]


async def test_write_eof_sends_what_was_gathered_first() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"body")
    gathering.write_eof()
    assert real.writes == [b"body"]
    assert real.eof


async def test_nothing_is_written_to_a_transport_closed_in_the_meantime() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"too late")
    real.close()  # the peer went away in the same turn
    await _turn()
    assert real.writes == []


async def test_everything_else_is_the_wrapped_transports() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert gathering.get_extra_info("peername") == "info:peername"


async def test_a_completed_response_can_be_sent_at_once_without_waiting_for_the_turn() -> None:
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
    gathering.write(b'{"result":3}')
    gathering.flush()  # as the protocol does when the response is complete
    assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"result":3}']
    gathering.write(b"next")
    await _turn()  # the flush scheduled by the first write sends only what came after
    assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"result":3}', b"next"]


async def test_the_answer_of_the_only_call_being_answered_is_written_at_once() -> None:
    real = RecordingTransport()
    answering = Answering()
    answering.calls = 1  # this call only
    gathering = GatheringTransport(real, asyncio.get_running_loop(), answering)  # type: ignore[arg-type]
    gathering.write(b"HTTP/1.1 200 OK\r\n\r\n")
    gathering.write_answer(b'{"result":3}')
    assert real.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"result":3}']


async def test_answers_made_while_other_calls_are_answered_go_out_at_the_end_of_the_turn() -> None:
    loop = asyncio.get_running_loop()
    answering = Answering()
    answering.calls = 2
    first, second = RecordingTransport(), RecordingTransport()
    for real, answer in ((first, b"one"), (second, b"two")):
        GatheringTransport(real, loop, answering).write_answer(answer)  # type: ignore[arg-type]
    assert (first.writes, second.writes) == ([], [])  # both answers made before either write
    await _turn()
    assert (first.writes, second.writes) == ([b"one"], [b"two"])


@pytest.mark.parametrize("now", [True, False])
async def test_an_answer_asked_for_now_is_written_at_once_while_others_are_answered(
    now: bool,
) -> None:
    answering = Answering()
    answering.calls = 2
    real = RecordingTransport()
    gathering = GatheringTransport(real, asyncio.get_running_loop(), answering)  # type: ignore[arg-type]
    flow = SimpleNamespace(write_paused=False)
    cycle = InvocationCycle({}, gathering, flow, [], True, lambda: None)  # type: ignore[arg-type]
    assert cycle.respond(200, [(b"content-length", b"2")], b"ok", now=now) is True
    assert len(real.writes) == (1 if now else 0)
    await _turn()
    assert len(real.writes) == 1
    assert real.writes[0].endswith(b"\r\n\r\nok")
