"""Calls to one instance over one connection, shared by the process that started the instance
(``local.LocalInstance``) and a gateway process it was handed to (``local.AttachedInstance``).

Calls are matched to answers by request id. A call's clock starts when the instance can run it
(fewer than ``concurrency`` calls ahead of it on this connection), not when it was sent ahead;
the first running call past its timeout ends the instance, and the calls that never started get
:class:`errors.CallNotStarted`, so the gateway sends them to another instance.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from modelhost import errors
from modelhost.backends.base import CallResult, InstanceSpec, InstanceState
from modelhost.runtime import protocol

logger = logging.getLogger(__name__)


class _Batch:
    """The calls sent together as one batch: they start and end together."""

    __slots__ = ("left",)

    def __init__(self, size: int) -> None:
        #: its calls not answered yet
        self.left = size


class _Call:
    """A call sent to the instance. Its clock starts when the instance can run it (when fewer
    calls than the version's concurrency are ahead of it), not when it was sent ahead."""

    __slots__ = ("batch", "future", "started", "timeout")

    def __init__(
        self,
        future: asyncio.Future[tuple[int, bytes]],
        timeout: float,
        batch: _Batch | None = None,
    ) -> None:
        self.future = future
        self.timeout = timeout
        self.started: float | None = None
        #: the batch it was sent in, shared by the batch's calls; None for a call on its own
        self.batch = batch


def decode_answer(kind: int, payload: bytes) -> CallResult:
    """The result of a RESULT frame's payload; an ERROR frame's raises its error."""
    if kind == protocol.RESULT:
        return CallResult(*protocol.decode_result_body(payload))
    error = json.loads(protocol.decode_error(payload)[1])
    cls = errors.ERRORS_BY_CODE.get(error.get("code"), errors.ModelError)
    raise cls(error.get("message", "The call failed."))


def _request_ids(frames: list[bytes]) -> set[str]:
    """The request ids of the calls in CALL and BATCH ``frames``."""
    ids: set[str] = set()
    for kind, payload in protocol.FrameDecoder().feed(b"".join(frames)):
        if kind == protocol.CALL:
            ids.add(protocol.decode_call(payload)[0])
        elif kind == protocol.BATCH:
            ids.update(request_id for request_id, _ in protocol.decode_batch(payload))
    return ids


class Connection(asyncio.Protocol):
    def __init__(self, instance: CallChannel) -> None:
        self.instance = instance
        self.decoder = protocol.FrameDecoder()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except protocol.ProtocolError as exc:
            logger.error("instance %s sent garbage: %s", self.instance.instance_name, exc)
            self.instance.end("protocol", "the instance sent bytes that are not a frame")
            return
        for kind, payload in frames:
            self.instance._on_frame(kind, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.instance._on_connection_lost()


class CallChannel:
    """The calling side of an instance, and the state every kind of instance keeps (the
    :class:`~modelhost.backends.base.Instance` protocol's). Subclasses connect ``_transport``
    and say what ending the instance means."""

    def __init__(self, spec: InstanceSpec, state: InstanceState) -> None:
        self.spec = spec
        self.state = state
        self.concurrency = spec.concurrency
        self.version_number = spec.version_number
        self.failure: str | None = None
        self.failure_traceback: str | None = None
        self.signature: str | None = None
        self.schema: dict[str, Any] | None = None
        self.ended_by: str | None = None
        self.inflight = 0
        self._loop = asyncio.get_running_loop()
        #: calls sent and not yet answered, in the order they were sent
        self._pending: dict[str, _Call] = {}
        #: one timer for the earliest deadline of the calls running, re-armed lazily
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        #: frames sent in this turn of the event loop, written together at its end
        self._outbox: list[bytes] = []

    @property
    def instance_name(self) -> str:
        raise NotImplementedError

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind in (protocol.RESULT, protocol.ERROR):
            self._answer(kind, payload)

    def _on_connection_lost(self) -> None:
        raise NotImplementedError

    def end(self, reason: str, message: str) -> None:
        raise NotImplementedError

    async def drained(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until no call is in flight."""
        deadline = self._loop.time() + timeout
        while self.inflight and self._loop.time() < deadline:
            await asyncio.sleep(0.02)

    def _answer(self, kind: int, payload: bytes) -> None:
        request_id = payload[: protocol.REQUEST_ID_LENGTH].decode("ascii")
        call = self._pending.pop(request_id, None)
        if call is None:
            return
        if not call.future.done():
            call.future.set_result((kind, payload))
        batch = call.batch
        if batch is not None:
            batch.left -= 1
            if batch.left:
                return  # the rest of its batch still runs: no call ahead of others has ended
        if self._pending:
            self._start_clocks(self._loop.time())

    def _fail_pending(self, ran: errors.ModelhostError | None = None) -> None:
        """No answer will come. A call that never started (it waited behind others, and the
        worker runs one at a time) is safe to send elsewhere; the ones that ran are not: they
        get ``ran`` (by default :class:`errors.InstanceCrashed`). Calls still gathered for
        the end of the loop's turn were never written, so never started either."""
        pending, self._pending = self._pending, {}
        unsent = _request_ids(self._outbox)
        self._outbox = []
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        resend = self.concurrency == 1
        for request_id, call in pending.items():
            if call.future.done():
                continue
            if (resend and call.started is None) or request_id in unsent:
                call.future.set_exception(
                    errors.CallNotStarted(
                        f"The instance running version {self.version_number} went away "
                        "before this call started; it was not run."
                    )
                )
            elif ran is not None:
                call.future.set_exception(ran)
            else:
                call.future.set_exception(
                    errors.InstanceCrashed(
                        f"The instance running version {self.version_number} died during "
                        "the call; it is being replaced. The instance log may say why."
                    )
                )

    def running_since(self) -> float | None:
        """When the oldest call this instance is running now started (the loop's clock); calls
        start in the order they were sent, so that is the first one still pending."""
        for call in self._pending.values():
            return call.started
        return None

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        future = self.start_call(request_id, body, timeout)
        try:
            await future
        except BaseException:
            self.inflight -= 1
            raise
        return self.end_call(future)

    def start_call(
        self, request_id: str, body: bytes, timeout: float
    ) -> asyncio.Future[tuple[int, bytes]]:
        """Send a call; its future gets the answer frame, or the error that ended the call.
        Hand the done future to :meth:`end_call` (:meth:`call` does both, awaiting between)."""
        if self.state is not InstanceState.READY or self._transport is None:
            raise errors.NoReadyInstance(
                "The instance is not ready; retry shortly.", headers={"Retry-After": "1"}
            )
        call = _Call(self._loop.create_future(), timeout)
        self._pending[request_id] = call
        if len(self._pending) <= self.concurrency:
            call.started = self._loop.time()
            self._arm(call.started + timeout)
        self.inflight += 1
        self._send(protocol.encode_call(request_id, body))
        return call.future

    def end_call(self, future: asyncio.Future[tuple[int, bytes]]) -> CallResult:
        """The result of a call :meth:`start_call` sent, once its future is done; raises the
        error that ended it, or the one its ERROR frame carries."""
        self.inflight -= 1
        kind, payload = future.result()
        if kind == protocol.RESULT:
            return CallResult(*protocol.decode_result_body(payload))
        return decode_answer(kind, payload)

    def _send(self, frame: bytes) -> None:
        """Send ``frame`` at the end of this turn of the event loop, with the other frames sent
        in it. Under load the gateway admits several calls to an instance per turn: one write
        for all of them is one system call, and one wake-up of the instance, instead of one
        each (measured: a quarter more calls a second to ``add`` at 32 connections). A lone
        call leaves a few microseconds later, when the turn ends."""
        outbox = self._outbox
        if not outbox:
            self._loop.call_soon(self.flush)
        outbox.append(frame)

    def flush(self) -> None:
        """Write the frames sent in this turn now (the flush already scheduled finds none)."""
        outbox, self._outbox = self._outbox, []
        if outbox and self._transport is not None and not self._transport.is_closing():
            self._transport.write(outbox[0] if len(outbox) == 1 else b"".join(outbox))

    def send_batch(
        self,
        calls: Sequence[tuple[str, bytes, asyncio.Future[tuple[int, bytes]]]],
        timeout: float,
        *,
        runs_now: bool,
    ) -> None:
        """Send ``(request id, body, future)`` calls as one batch (one CALL frame for one call);
        each future gets its call's answer frame, or the error that ended it. ``runs_now``: the
        instance has room to run the batch at once, so its clock starts now."""
        if self.state is not InstanceState.READY or self._transport is None:
            for _, _, future in calls:
                if not future.done():
                    future.set_exception(
                        errors.CallNotStarted("The instance stopped before the batch was sent.")
                    )
            return
        batch = _Batch(len(calls))
        started = self._loop.time() if runs_now else None
        for request_id, _, future in calls:
            call = _Call(future, timeout, batch)
            call.started = started
            self._pending[request_id] = call
            future.add_done_callback(self._batch_call_done)
        self.inflight += len(calls)
        if started is not None:
            self._arm(started + timeout)
        if len(calls) == 1:
            request_id, body, _ = calls[0]
            self._send(protocol.encode_call(request_id, body))
        else:
            self._send(protocol.encode_batch([(rid, body) for rid, body, _ in calls]))

    def _batch_call_done(self, _future: asyncio.Future[tuple[int, bytes]]) -> None:
        self.inflight -= 1

    def _arm(self, deadline: float) -> None:
        watchdog = self._watchdog
        if watchdog is None or watchdog.when() > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = self._loop.call_at(deadline, self._check_clocks)

    def _start_clocks(self, now: float) -> None:
        """An answer came: the calls now among the first ``concurrency`` have begun (a batch
        counts as one call: its calls run together)."""
        units = 0
        batch: _Batch | None = None
        for call in self._pending.values():
            if call.batch is None or call.batch is not batch:
                if units >= self.concurrency:
                    break
                units += 1
                batch = call.batch
            if call.started is None:
                call.started = now
                self._arm(now + call.timeout)

    def _check_clocks(self) -> None:
        """Fail the first running call past its timeout, else wait for the next deadline.
        Answers do not touch the timer: it is re-armed here, once per deadline at most."""
        self._watchdog = None
        now = self._loop.time()
        earliest: float | None = None
        units = 0
        batch: _Batch | None = None
        for request_id, call in self._pending.items():
            if call.batch is None or call.batch is not batch:
                if units >= self.concurrency:
                    break
                units += 1
                batch = call.batch
            if call.started is None:
                continue
            deadline = call.started + call.timeout
            if deadline <= now:
                self._call_timed_out(request_id, call)
                return
            earliest = deadline if earliest is None else min(earliest, deadline)
        if earliest is not None:
            self._watchdog = self._loop.call_at(earliest, self._check_clocks)

    def _call_timed_out(self, request_id: str, call: _Call) -> None:
        del self._pending[request_id]
        timed_out = [call]
        if call.batch is not None:  # the calls of its batch ran as long
            for other_id, other in list(self._pending.items()):
                if other.batch is call.batch:
                    del self._pending[other_id]
                    timed_out.append(other)
        for each in timed_out:
            if not each.future.done():
                each.future.set_exception(
                    errors.ModelTimeout(
                        f"The call did not finish within {call.timeout:g} s; the instance is "
                        "being replaced. Make the function faster or raise the model's timeout."
                    )
                )
        self.end(
            "timeout", f"a call passed the timeout of {call.timeout:g} s; replacing the instance"
        )
        # The calls waiting behind it never started: they go to another instance now rather
        # than when this process is gone.
        self._fail_pending()
