"""A call channel's clocks with batches: a batch's calls start and end together, and the batch
sent ahead starts its clock when the running one's last call is answered.

The channel is the real one (``backends/channel.py``) on a real event loop; only its transport
is a stand-in that keeps what was written (the worker's side is ``tests/runtime`` and, with
real processes, ``tests/integration/test_batching.py``).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from modelhost import errors
from modelhost.backends.base import InstanceState
from modelhost.backends.channel import CallChannel
from modelhost.runtime import protocol

pytestmark = pytest.mark.anyio


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False


def _channel() -> CallChannel:
    spec: Any = SimpleNamespace(concurrency=1, version_number=1)  # what a channel reads of one
    channel = CallChannel(spec, InstanceState.READY)
    channel._transport = Transport()  # type: ignore[assignment]
    return channel


def _batch(
    channel: CallChannel, first: int, size: int, *, runs_now: bool
) -> list[asyncio.Future[tuple[int, bytes]]]:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(size)]
    calls = [(f"{first + i:016d}", b"{}", future) for i, future in enumerate(futures)]
    channel.send_batch(calls, 30.0, runs_now=runs_now)
    return futures


def _answer(channel: CallChannel, number: int) -> None:
    frame = protocol.encode_result(f"{number:016d}", 1.0, b"1")
    channel._answer(protocol.RESULT, frame[protocol.HEADER.size :])


async def test_the_batch_sent_ahead_starts_its_clock_when_the_last_call_before_it_is_answered() -> (
    None
):
    channel = _channel()
    running = _batch(channel, 0, 3, runs_now=True)
    _batch(channel, 100, 2, runs_now=False)
    assert channel._pending[f"{100:016d}"].started is None
    _answer(channel, 0)
    _answer(channel, 1)
    assert channel._pending[f"{100:016d}"].started is None  # one call of the batch still runs
    _answer(channel, 2)
    assert all(future.done() for future in running)
    assert channel._pending[f"{100:016d}"].started is not None
    assert channel._pending[f"{101:016d}"].started is not None


async def test_answering_a_batch_looks_for_calls_to_start_once_not_once_per_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A batch of up to 1,024 calls: looking at every call still pending on each answer made
    # answering one batch cost the event loop time quadratic in its size.
    channel = _channel()
    _batch(channel, 0, 64, runs_now=True)
    _batch(channel, 100, 64, runs_now=False)
    looks: list[float] = []
    start_clocks = channel._start_clocks
    monkeypatch.setattr(
        channel, "_start_clocks", lambda now: (looks.append(now), start_clocks(now))
    )
    for number in range(64):
        _answer(channel, number)
    assert len(looks) == 1
    assert all(channel._pending[f"{100 + i:016d}"].started is not None for i in range(64))


async def test_a_call_sent_on_its_own_behind_a_batch_starts_when_the_batch_ends() -> None:
    channel = _channel()
    _batch(channel, 0, 2, runs_now=True)
    _batch(channel, 100, 1, runs_now=False)  # one call: a CALL frame, not a batch of one
    _answer(channel, 0)
    assert channel._pending[f"{100:016d}"].started is None
    _answer(channel, 1)
    assert channel._pending[f"{100:016d}"].started is not None


async def test_calls_sent_in_one_turn_of_the_loop_reach_the_instance_in_one_write() -> None:
    channel = _channel()
    transport = channel._transport
    assert isinstance(transport, Transport)
    calls = [asyncio.create_task(channel.call(f"{n:016d}", b'{"data":{}}', 30.0)) for n in range(3)]
    await asyncio.sleep(0)  # the three calls run up to their answer, then the turn ends
    await asyncio.sleep(0)
    assert transport.written == [
        b"".join(protocol.encode_call(f"{n:016d}", b'{"data":{}}') for n in range(3))
    ]
    for n in range(3):
        _answer(channel, n)
    results = await asyncio.gather(*calls)
    assert [result.result_json for result in results] == [b"1", b"1", b"1"]


async def test_a_lone_call_is_written_when_its_turn_of_the_loop_ends() -> None:
    channel = _channel()
    transport = channel._transport
    assert isinstance(transport, Transport)
    call = asyncio.create_task(channel.call("0" * 16, b"{}", 30.0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert transport.written == [protocol.encode_call("0" * 16, b"{}")]
    later = asyncio.create_task(channel.call("1" * 16, b"{}", 30.0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert transport.written[1:] == [protocol.encode_call("1" * 16, b"{}")]
    _answer(channel, 0)
    channel._answer(
        protocol.RESULT, protocol.encode_result("1" * 16, 1.0, b"2")[protocol.HEADER.size :]
    )
    assert [r.result_json for r in await asyncio.gather(call, later)] == [b"1", b"2"]


async def test_calls_gathered_when_the_instance_is_lost_are_never_written() -> None:
    channel = _channel()
    transport = channel._transport
    assert isinstance(transport, Transport)
    call = asyncio.create_task(channel.call("0" * 16, b"{}", 30.0))
    await asyncio.sleep(0)  # gathered, not yet written
    channel._fail_pending()
    with pytest.raises(errors.CallNotStarted):
        await call
    await asyncio.sleep(0)
    assert transport.written == []


async def test_a_batch_gathered_when_the_instance_is_lost_is_sent_elsewhere() -> None:
    channel = _channel()
    futures = _batch(channel, 0, 3, runs_now=True)
    channel._fail_pending()
    for future in futures:
        with pytest.raises(errors.CallNotStarted):
            future.result()
