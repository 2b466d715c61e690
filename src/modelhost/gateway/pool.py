"""Admission: each deployed version has a pool of ready instances and a bounded wait queue."""

from __future__ import annotations

import asyncio
from collections import deque

from modelhost import errors
from modelhost.backends.base import Instance, InstanceState


class VersionPool:
    """Hands each call an idle instance (one call per instance), or queues it, or refuses it."""

    def __init__(self, version_id: str, number: int, max_queued: int) -> None:
        self.version_id = version_id
        self.number = number
        self.max_queued = max_queued
        #: instances being started for this version; calls wait for them instead of failing
        self.starting = 0
        self._instances: list[Instance] = []
        self._idle: deque[Instance] = deque()
        self._waiters: deque[asyncio.Future[Instance]] = deque()

    @property
    def ready_count(self) -> int:
        return len(self._instances)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def add(self, instance: Instance) -> None:
        if instance not in self._instances:
            self._instances.append(instance)
            self._hand_over(instance)

    def remove(self, instance: Instance) -> None:
        if instance in self._instances:
            self._instances.remove(instance)
        if instance in self._idle:
            self._idle.remove(instance)

    def instances(self) -> list[Instance]:
        return list(self._instances)

    def _unavailable(self) -> errors.NoReadyInstance:
        return errors.NoReadyInstance(
            f"Version {self.number} has no ready instance right now (it is starting or "
            "being replaced); retry in a moment.",
            headers={"Retry-After": "1"},
        )

    def set_starting(self, count: int) -> None:
        """Record instances being started; with none ready or starting, waiting calls fail."""
        self.starting = count
        if not self._instances and not count:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(self._unavailable())

    async def acquire(self, timeout: float) -> Instance:
        if self._idle:
            return self._idle.popleft()
        if not self._instances and not self.starting:
            raise self._unavailable()
        if len(self._waiters) >= self.max_queued:
            raise errors.QueueFull(
                f"All instances of version {self.number} are busy and {self.max_queued} calls "
                "are already waiting; retry shortly or add instances.",
                headers={"Retry-After": "1"},
            )
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise errors.ModelTimeout(
                f"The call waited {timeout:g} s for a free instance of version {self.number}; "
                "add instances or make the function faster."
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed an instance just as we gave up
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def release(self, instance: Instance) -> None:
        if instance.state is not InstanceState.READY or instance not in self._instances:
            self.remove(instance)
            return
        self._hand_over(instance)

    def _hand_over(self, instance: Instance) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(instance)
                return
        self._idle.append(instance)
