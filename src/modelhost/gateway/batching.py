"""Adaptive batching: the pool of a version published as a batching function.

A version published with ``batch_max_size`` has a function that takes a list of inputs and
returns a list of results. Its calls never wait for company they do not need:

- a call that finds an instance with room to run it now is sent at once, with whatever else
  is waiting (so a lone caller pays nothing for batching). Only under load does an idle
  instance wait for company: callers answered in the last ``max_wait_ms`` are likely on their
  way back with their next calls, so while some are not back yet, the calls wait for them, at
  most until the oldest has waited ``max_wait_ms``. Each call that arrives counts as one of
  them back (the longest answered first), so a lone caller, back with its next call, never
  waits. Calls that were already waiting when a batch was answered are other callers: they
  are weighed against the callers still due, and the instance waits while fewer of them wait.
  Without the wait, the first caller back would find the instance idle and go alone, and the
  batches would alternate between one call and all the others; and counting every call
  answered lately, not only the last batch's, lets two groups of callers taking turns on an
  instance (one batch running, one sent ahead) merge into one larger batch;
- while every instance is busy, calls queue here. They leave as one batch of at most
  ``max_size`` calls when an instance frees up, or, sent ahead to the least busy instance
  (which runs it right after its current batch), as soon as ``max_size`` calls are waiting or
  the oldest has waited ``max_wait_ms``. An instance holds at most ``concurrency + 1``
  batches: one running per thread, and one sent ahead.

Each call still gets its own answer frame, so its own result, ``request_id``, ``timing`` and
``model_time_in_ms``; the instance (``runtime/worker.py``) calls a failed batch's inputs again
one at a time, so only a call that fails on its own fails. The queue holds ``max_queued`` calls
more than one full batch (503 with ``Retry-After`` past that), so that batches can fill whatever
``max_size`` is, and a call waits at most the model's timeout for an instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import cast

from modelhost import errors
from modelhost.backends.base import CallResult, Instance
from modelhost.backends.channel import CallChannel, decode_answer
from modelhost.gateway.board import NO_SLOT, LoadBoard
from modelhost.gateway.pool import VersionPool

#: batch sizes are counted in these buckets (the upper bounds), for /metrics and the bench
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Queued:
    """A call in a batching pool's queue, until its batch is answered."""

    __slots__ = ("body", "future", "matched", "request_id", "sent", "since", "timeout", "timer")

    def __init__(
        self,
        request_id: str,
        body: bytes,
        future: asyncio.Future[tuple[int, bytes]],
        since: float,
        timeout: float,
    ) -> None:
        self.request_id = request_id
        self.body = body
        self.future = future
        self.since = since
        self.timeout = timeout
        self.timer: asyncio.TimerHandle | None = None
        self.sent = False
        #: it came when a caller answered lately was due back, and counts as that one back
        self.matched = False


class _Sent:
    """A batch on its instance: when its last call is answered, the instance has room again."""

    __slots__ = ("instance", "left", "pool", "size")

    def __init__(self, pool: BatchingPool, instance: Instance, size: int) -> None:
        self.pool = pool
        self.instance = instance
        self.size = size
        self.left = size

    def one_done(self, _future: asyncio.Future[tuple[int, bytes]]) -> None:
        self.left -= 1
        pool = self.pool
        pool.in_flight -= 1
        if not self.left:
            pool.answered.append([asyncio.get_running_loop().time(), self.size])
            pool.release(self.instance)


class BatchingPool(VersionPool):
    """The pool of a batching version. The load it counts per instance is in batches."""

    batching = True

    def __init__(
        self,
        version_id: str,
        number: int,
        max_queued: int,
        *,
        concurrency: int = 1,
        max_size: int,
        max_wait_ms: float,
        board: LoadBoard | None = None,
        slot: int = NO_SLOT,
        process: int = 0,
    ) -> None:
        super().__init__(
            version_id,
            number,
            max_queued,
            batch_capacity(concurrency),
            board=board,
            slot=slot,
            process=process,
        )
        self.concurrency = concurrency
        self.max_size = max_size
        self.max_wait_ms = max_wait_ms
        self._queue: deque[Queued] = deque()
        self._wait_timer: asyncio.Handle | None = None
        self._wait_due = 0.0
        #: batches sent, by size bucket (``SIZE_BUCKETS``), and the calls they held
        self.size_counts = [0] * len(SIZE_BUCKETS)
        self.batches = 0
        self.calls = 0
        #: calls sent and not yet answered (``busy`` counts batches, as the load does)
        self.in_flight = 0
        #: batches answered in the last ``max_wait_ms`` whose callers are not all back yet:
        #: [when, by the loop's clock; how many of its callers are not back]
        self.answered: deque[list[float]] = deque()
        #: of the calls waiting, those that came when no caller answered lately was due back
        self.unmatched = 0

    def tune(self, max_size: int, max_wait_ms: float) -> None:
        """New limits, for the batches sent from now on."""
        self.max_size = max_size
        self.max_wait_ms = max_wait_ms
        self._dispatch()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return self.in_flight

    def take(self) -> Instance | None:
        return None  # every call goes through :meth:`submit`

    async def acquire(self, timeout: float) -> Instance:  # pragma: no cover - not used
        raise AssertionError("a batching pool's calls go through submit()")

    def enqueue(self, request_id: str, body: bytes, timeout: float) -> Queued:
        """Queue one call, to leave in a batch with whatever else is waiting; its ``future``
        gets the answer frame, or the error that ended the call. Raises, with nothing queued,
        when the version takes no calls or the queue is full."""
        if self.closed:
            raise self._rerouted()
        if not self._load and not self.starting:
            raise self._unavailable()
        queue = self._queue
        limit = self.max_queued + self.max_size  # a full batch, and the usual queue beyond it
        if len(queue) >= limit:
            raise errors.QueueFull(
                f"All instances of version {self.number} are busy and {limit} calls are "
                "already waiting; retry shortly or add instances.",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        entry = Queued(request_id, body, loop.create_future(), loop.time(), timeout)
        queue.append(entry)
        self._came_back(entry)
        self._dispatch()
        if not entry.sent and not entry.future.done():
            entry.timer = loop.call_later(timeout, self._waited_too_long, entry)
        return entry

    async def submit(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        """Run one call, in a batch with whatever else is waiting."""
        entry = self.enqueue(request_id, body, timeout)
        try:
            kind, payload = await entry.future
        finally:
            self.settled(entry)
        return decode_answer(kind, payload)

    def settled(self, entry: Queued) -> None:
        """The caller of ``entry`` is done with it: answered, failed, or gone away (then a call
        still waiting leaves the queue)."""
        if entry.timer is not None:
            entry.timer.cancel()
        if not entry.sent:  # the caller went away while it waited (its task cancelled)
            entry.future.cancel()
            with contextlib.suppress(ValueError):  # already taken out (timeout, closing)
                self._queue.remove(entry)
                self._taken_out(entry)

    # ------------------------------------------------------------------ dispatch

    def _serve_waiters(self) -> None:
        super()._serve_waiters()
        self._dispatch()

    def _dispatch(self) -> None:
        """Send what is waiting, as the rules in the module's docstring say."""
        queue = self._queue
        while queue:
            instance: Instance | None = None
            load = self.capacity
            for candidate in reversed(self._ready):  # the most recently idle first
                candidate_load = self._load[candidate]
                if candidate_load < load:
                    instance, load = candidate, candidate_load
                    if not load:
                        break
            if instance is None:
                return  # every instance holds a batch and one sent ahead: the next to finish
            waiting = len(queue)
            if waiting < self.max_size and (
                load >= self.concurrency or self.unmatched < self._coming_back()
            ):
                # Busy: send ahead only a full batch, or one whose oldest call waited enough.
                # Idle under load: wait as long for the callers answered lately to come back.
                loop = asyncio.get_running_loop()
                due = queue[0].since + self.max_wait_ms / 1000
                if loop.time() < due:
                    # The timer stands for the oldest call waiting now: one armed for calls
                    # that have left since would cut this wait short.
                    # (Its due time is kept here: uvloop hands back a plain Handle, without
                    # ``when()``, for a time already past.)
                    timer = self._wait_timer
                    if timer is None or self._wait_due != due:
                        if timer is not None:
                            timer.cancel()
                        self._wait_timer = loop.call_at(due, self._waited)
                        self._wait_due = due
                    return
            count = min(self.max_size, len(queue))
            self._send(instance, [queue.popleft() for _ in range(count)], load)

    def _came_back(self, entry: Queued) -> None:
        """A call arrived: it counts as one caller answered lately back, the longest answered
        first, if one is due."""
        answered = self._recent()
        if answered:
            entry.matched = True
            first = answered[0]
            first[1] -= 1
            if not first[1]:
                answered.popleft()
        else:
            self.unmatched += 1

    def _taken_out(self, entry: Queued) -> None:
        """A call left the queue: sent, timed out, or its caller went away."""
        if not entry.matched:
            self.unmatched -= 1

    def _coming_back(self) -> int:
        """The callers answered in the last ``max_wait_ms`` not back yet: under load, they are
        on their way back with their next calls."""
        return int(sum(due for _, due in self._recent()))

    def _recent(self) -> deque[list[float]]:
        """:attr:`answered`, without the batches answered ``max_wait_ms`` ago or longer."""
        answered = self.answered
        since = asyncio.get_running_loop().time() - self.max_wait_ms / 1000
        while answered and answered[0][0] <= since:
            answered.popleft()
        return answered

    def _waited(self) -> None:
        self._wait_timer = None
        self._dispatch()

    def _send(self, instance: Instance, batch: list[Queued], load: int) -> None:
        self._load[instance] = load + 1
        if self.board is not None:
            self._changed()
        size = len(batch)
        self.batches += 1
        self.calls += size
        for index, bound in enumerate(SIZE_BUCKETS):
            if size <= bound:
                self.size_counts[index] += 1
                break
        else:
            self.size_counts[-1] += 1
        self.in_flight += size
        sent = _Sent(self, instance, size)
        calls = []
        for entry in batch:
            entry.sent = True
            self._taken_out(entry)
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            entry.future.add_done_callback(sent.one_done)
            calls.append((entry.request_id, entry.body, entry.future))
        channel = cast(CallChannel, instance)
        channel.send_batch(calls, batch[0].timeout, runs_now=load < self.concurrency)

    def _waited_too_long(self, entry: Queued) -> None:
        entry.timer = None
        if not entry.sent and not entry.future.done():
            self._queue.remove(entry)
            self._taken_out(entry)
            entry.future.set_exception(
                errors.ModelTimeout(
                    f"The call waited {entry.timeout:g} s for a free instance of version "
                    f"{self.number}; add instances or make the function faster."
                )
            )

    # ------------------------------------------------------------------ endings

    def set_starting(self, count: int) -> None:
        super().set_starting(count)
        if not self._load and not count:
            self._fail_queue(self._unavailable())

    def close(self) -> None:
        super().close()
        self._fail_queue(self._rerouted())

    def _fail_queue(self, error: Exception) -> None:
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        while self._queue:
            entry = self._queue.popleft()
            if not entry.future.done():
                entry.future.set_exception(error)
        self.unmatched = 0


def batch_capacity(concurrency: int) -> int:
    """Batches one instance holds: one running per thread, and one sent ahead."""
    return concurrency + 1


def new_pool(
    version_id: str,
    number: int,
    max_queued: int,
    capacity: int,
    batch: tuple[int, float] | None,
    *,
    concurrency: int = 1,
    board: LoadBoard | None = None,
    slot: int = NO_SLOT,
    process: int = 0,
) -> VersionPool:
    """The pool of a version: a :class:`BatchingPool` when ``batch`` gives its limits
    (largest batch, longest wait in ms), else a plain pool of ``capacity`` calls an instance."""
    if batch is None:
        return VersionPool(
            version_id, number, max_queued, capacity, board=board, slot=slot, process=process
        )
    return BatchingPool(
        version_id,
        number,
        max_queued,
        concurrency=concurrency,
        max_size=batch[0],
        max_wait_ms=batch[1],
        board=board,
        slot=slot,
        process=process,
    )


def batch_counts(pool: VersionPool) -> list[int] | None:
    """A batching pool's batches since it was made: the count per size bucket
    (``SIZE_BUCKETS``), then the batches and the calls they held; None for a plain pool."""
    if isinstance(pool, BatchingPool):
        return [*pool.size_counts, pool.batches, pool.calls]
    return None


def limits_of(pool: VersionPool) -> tuple[int, float] | None:
    """A batching pool's limits, as :func:`new_pool` takes them; None for a plain pool."""
    if isinstance(pool, BatchingPool):
        return pool.max_size, pool.max_wait_ms
    return None
