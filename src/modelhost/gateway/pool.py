"""Admission: each running version has a pool of ready instances and a bounded wait queue.

A call goes to the least-busy ready instance with room (an instance takes ``capacity`` calls at
once: its concurrency plus the calls sent ahead), among equals the one idle most recently; when
none has room the call waits in a bounded queue, and past that it is refused at once with 503
and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
from collections import deque

from modelhost import errors
from modelhost.backends.base import Instance, InstanceState
from modelhost.gateway.board import NO_SLOT, LoadBoard


class VersionPool:
    def __init__(
        self,
        version_id: str,
        number: int,
        max_queued: int,
        capacity: int = 1,
        *,
        board: LoadBoard | None = None,
        slot: int = NO_SLOT,
        process: int = 0,
    ) -> None:
        self.version_id = version_id
        self.number = number
        self.max_queued = max_queued
        self.capacity = capacity
        #: instances being started for this version; calls wait for them instead of failing
        self.starting = 0
        #: how long a call here takes, a moving average (None: none measured yet), which tells
        #: gateway processes whether passing a call elsewhere is worth it (gateway/peers.py)
        self.call_seconds: float | None = None
        self._load: dict[Instance, int] = {}
        #: the keys of ``_load`` as a list, kept in step, so admission never copies them
        self._ready: list[Instance] = []
        self._waiters: deque[asyncio.Future[Instance]] = deque()
        #: no route sends calls here any more (see :meth:`close`)
        self.closed = False
        #: with gateway processes: where this process says how busy its least busy instance of
        #: the version is (its cell of the version's slot), so the others know
        self.board = board
        self.slot = slot
        self.process = process
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def ready_count(self) -> int:
        return len(self._load)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def busy(self) -> int:
        return sum(self._load.values())

    def instances(self) -> list[Instance]:
        return list(self._load)

    def add(self, instance: Instance) -> None:
        if instance not in self._load:
            self._load[instance] = 0
            self._ready.append(instance)
            self._serve_waiters()
            self._changed()

    def remove(self, instance: Instance) -> None:
        """Take an instance out of rotation; its calls in flight still finish."""
        if self._load.pop(instance, None) is not None:
            self._ready.remove(instance)
            self._changed()

    def observe(self, seconds: float) -> None:
        """A call's function ran for ``seconds`` here. The function's own time, not the call's:
        under load a call to a tiny function waits in the event loop for milliseconds, which a
        pass to another process would only make longer."""
        known = self.call_seconds
        self.call_seconds = seconds if known is None else known + (seconds - known) / 8

    def running_longer_than(self, seconds: float) -> bool:
        """Whether an instance here has been running a call for more than ``seconds``."""
        since: float | None = None
        for instance in self._ready:
            started = getattr(instance, "running_since", None)
            begun = started() if started is not None else None
            if begun is not None:
                if since is None:
                    since = self._clock().time() - seconds
                if begun < since:
                    return True
        return False

    def _clock(self) -> asyncio.AbstractEventLoop:
        """The event loop, whose clock the instances' ``running_since`` reads; asked once:
        in Python 3.11 every ``asyncio.get_running_loop()`` is a ``getpid()`` system call."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def lowest(self) -> int | None:
        """The calls on the least busy instance (None: there is none)."""
        return min(self._load.values()) if self._load else None

    def _changed(self) -> None:
        if self.board is not None:
            self.board.set(self.slot, self.process, self.lowest())

    def expect_replacement(self) -> None:
        """An instance died: calls wait for its replacement rather than fail at once. The
        reconciler's next tick sets the true count of starting instances."""
        self.starting = max(self.starting, 1)

    def _unavailable(self) -> errors.NoReadyInstance:
        return errors.NoReadyInstance(
            f"Version {self.number} has no ready instance right now (it is starting or "
            "being replaced); retry in a moment.",
            headers={"Retry-After": "1"},
        )

    def set_starting(self, count: int) -> None:
        """Record instances being started; with none ready or starting, waiting calls fail."""
        self.starting = count
        if not self._load and not count:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(self._unavailable())

    def close(self) -> None:
        """No route sends calls here any more: the calls waiting go back to be routed again
        (the gateway resolves them against the new table) instead of waiting for an instance
        that may never come; calls that come later are sent back the same way."""
        self.closed = True
        if self.board is not None:
            self.board.clear(self.slot, self.process)
            self.board = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._rerouted())

    def _rerouted(self) -> errors.CallNotStarted:
        return errors.CallNotStarted(
            f"Version {self.number} stopped taking calls before this one ran."
        )

    def _least_busy(self) -> Instance | None:
        # ``_ready`` is ordered by when each instance last became idle, latest last. Among the
        # least busy, the one that finished a call most recently gets the next: its caches
        # (the model's data, the interpreter's) are warm, where one idle for a while is not.
        load_of = self._load
        best: Instance | None = None
        best_load = self.capacity
        for instance in reversed(self._ready):
            load = load_of[instance]
            if load < best_load:
                best, best_load = instance, load
                if load == 0:
                    break
        return best

    def take(self) -> Instance | None:
        """An instance with room for one more call, or None when the call has to wait."""
        instance = self._least_busy()
        if instance is not None:
            self._load[instance] += 1
            if self.board is not None:
                self._changed()
        return instance

    async def acquire(self, timeout: float) -> Instance:
        instance = self.take()
        if instance is not None:
            return instance
        if self.closed:
            raise self._rerouted()
        if not self._load and not self.starting:
            raise self._unavailable()
        if len(self._waiters) >= self.max_queued:
            raise errors.QueueFull(
                f"All instances of version {self.number} are busy and {self.max_queued} calls "
                "are already waiting; retry shortly or add instances.",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Instance] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(timeout, self._give_up, waiter, timeout)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # handed an instance just as we gave up
            raise
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _give_up(self, waiter: asyncio.Future[Instance], timeout: float) -> None:
        if not waiter.done():
            waiter.set_exception(
                errors.ModelTimeout(
                    f"The call waited {timeout:g} s for a free instance of version "
                    f"{self.number}; add instances or make the function faster."
                )
            )

    def release(self, instance: Instance) -> None:
        if instance not in self._load:
            return  # removed from rotation while the call ran
        if instance.state is not InstanceState.READY:
            self.remove(instance)
            self.expect_replacement()
            return
        load = self._load[instance] - 1
        self._load[instance] = load
        if load == 0 and self._ready[-1] is not instance:
            self._ready.remove(instance)
            self._ready.append(instance)
        self._serve_waiters()
        if self.board is not None:
            self._changed()

    def _serve_waiters(self) -> None:
        while self._waiters:
            instance = self._least_busy()
            if instance is None:
                return
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._load[instance] += 1
                waiter.set_result(instance)
