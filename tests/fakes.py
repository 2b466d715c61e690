"""A backend that runs functions in the test process: fast tests of everything above it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from modelhost import errors
from modelhost.backends.base import CallResult, Instance, InstanceSpec, InstanceState
from modelhost.runtime import protocol, signatures, worker


class FakeInstance:
    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec
        self.state = InstanceState.STARTING
        self.failure: str | None = None
        self.failure_traceback: str | None = None
        self.signature: str | None = None
        self.schema: dict[str, Any] | None = None
        self.inflight = 0
        self.calls = 0
        self.ended_by: str | None = None
        self.log_lines: list[str] = []
        self._handler: worker.Handler | None = None

    def load(self) -> None:
        sys.path.insert(0, str(self.spec.workdir))
        try:
            function = worker.load_function(self.spec.workdir, self.spec.file, self.spec.function)
        except worker.LoadFailed as exc:
            self.state, self.failure = InstanceState.FAILED, exc.message
            self.failure_traceback = exc.user_traceback or None
            return
        finally:
            sys.path.remove(str(self.spec.workdir))
        self._handler = worker.Handler(function, self.spec.function)
        self.signature = self._handler.described
        self.schema = signatures.describe(function)
        self.state = InstanceState.READY

    @property
    def pid(self) -> int | None:
        return None

    def memory_mb(self) -> float | None:
        return None

    def log(self, message: str) -> None:
        self.log_lines.append(message)

    def end(self, reason: str, message: str) -> None:
        self.ended_by = reason
        self.log(message)
        self.state = InstanceState.EXITED

    def kill(self) -> None:
        self.state = InstanceState.EXITED

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        assert self._handler is not None
        self.calls += 1
        frame = self._handler(protocol.encode_call(request_id, body)[protocol.HEADER.size :])
        [(kind, payload)] = protocol.FrameDecoder().feed(frame)
        if kind == protocol.RESULT:
            return CallResult(*protocol.decode_result(payload)[1:])
        error = json.loads(protocol.decode_error(payload)[1])
        raise errors.ERRORS_BY_CODE[error["code"]](error["message"])


class FakeBackend:
    """Instances load synchronously on start, so one reconcile tick makes them ready."""

    def __init__(self) -> None:
        self.started: list[FakeInstance] = []
        self.stopped: list[FakeInstance] = []
        self._listener: Callable[[], None] = lambda: None

    def set_listener(self, listener: Callable[[], None]) -> None:
        self._listener = listener

    async def start(self, spec: InstanceSpec, load_timeout: float) -> FakeInstance:
        instance = FakeInstance(spec)
        self.started.append(instance)
        instance.load()
        self._listener()
        return instance

    async def stop(self, instance: Instance, drain_timeout: float) -> None:
        assert isinstance(instance, FakeInstance)
        if instance in self.started:
            self.started.remove(instance)
            self.stopped.append(instance)
        instance.state = InstanceState.EXITED

    def instances(self) -> Sequence[FakeInstance]:
        return list(self.started)

    async def close(self) -> None:
        for instance in list(self.started):
            await self.stop(instance, 0)
