"""An instance seen from a gateway process (setting ``gateway_processes``): the main server
process started it and handed this process the connection to it.

Calls work exactly as in the main process (:class:`CallChannel`). This process neither starts
nor stops the instance: when a call passes its timeout, :meth:`end` asks the main process to
end it (through ``on_end``), and a lost connection only takes it out of rotation here.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelhost.backends.base import InstanceSpec, InstanceState
from modelhost.backends.channel import CallChannel, Connection


def spec_to_json(spec: InstanceSpec) -> dict[str, Any]:
    return {
        "instance_id": spec.instance_id,
        "model_id": spec.model_id,
        "version_id": spec.version_id,
        "version_number": spec.version_number,
        "workdir": str(spec.workdir),
        "file": spec.file,
        "function": spec.function,
        "interpreter": spec.interpreter,
        "log_path": str(spec.log_path),
        "concurrency": spec.concurrency,
        "runtime": spec.runtime,
        "batch": spec.batch,
    }


def spec_from_json(data: dict[str, Any]) -> InstanceSpec:
    return InstanceSpec(
        instance_id=data["instance_id"],
        model_id=data["model_id"],
        version_id=data["version_id"],
        version_number=int(data["version_number"]),
        workdir=Path(data["workdir"]),
        file=data["file"],
        function=data["function"],
        interpreter=data["interpreter"],
        log_path=Path(data["log_path"]),
        concurrency=int(data["concurrency"]),
        runtime=data["runtime"],
        batch=bool(data.get("batch", False)),
    )


class AttachedInstance(CallChannel):
    def __init__(
        self,
        spec: InstanceSpec,
        *,
        on_end: Callable[[AttachedInstance, str, str], None],
        on_gone: Callable[[AttachedInstance], None],
    ) -> None:
        super().__init__(spec, InstanceState.READY)
        self._on_end = on_end
        self._on_gone = on_gone

    async def attach(self, sock: socket.socket) -> None:
        self._transport, _ = await self._loop.create_unix_connection(
            lambda: Connection(self), sock=sock
        )

    @property
    def instance_name(self) -> str:
        return self.spec.instance_id

    @property
    def pid(self) -> int | None:
        return None

    def memory_mb(self) -> float | None:
        return None

    def end(self, reason: str, message: str) -> None:
        """Stop using the instance and ask the main process to end it."""
        if self.ended_by is None:
            self.ended_by = reason
            self._on_end(self, reason, message)
        self._gone()

    def detach(self) -> None:
        """Let go of the connection (the main process stops the instance)."""
        self._gone()
        if self._transport is not None:
            self._transport.close()

    def _on_connection_lost(self) -> None:
        self._gone()

    def _gone(self) -> None:
        if self.state is InstanceState.READY:
            self.state = InstanceState.EXITED
            self._fail_pending()
            self._on_gone(self)
