"""Passing a call to a process that has an idle instance for it (setting ``gateway_processes``
above 1; see :mod:`modelhost.gateway.board`).

Every process that takes calls on the port (the main one, index 0, and each gateway process)
also listens on a Unix socket in the server's private directory. A process whose instances of
the called version are all busy, while the board says another process has an idle one, sends
the call there with the caller's address, marked so that it is never passed on a second time:
the receiving process runs it, or sends it ahead to its own instance if that became busy
meanwhile.
"""

from __future__ import annotations

import os

from modelhost.gateway.app import Receive, Scope, Send
from modelhost.gateway.board import LoadBoard
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.proxy import Proxy

#: on a call one process passed to another: never pass it on again
PASSED = b"x-modelhost-passed"
#: A call is passed to another process's idle instance only for versions whose calls take at
#: least this long (until the first is measured, always): a pass costs both processes a few
#: tenths of a millisecond, more than waiting behind a short call, and under load it cut `add`
#: at 32 connections by a fifth (bench/README.md). A call of a second never waits behind another
#: while an instance elsewhere is idle.
PASS_MIN_SECONDS = 0.005


def socket_path(directory: str, process: int) -> str:
    """Where process ``process`` (0 the main one) takes calls from the others."""
    return os.path.join(directory, "main.sock" if process == 0 else f"gateway-{process}.sock")


class Peers:
    """The other processes, as one process sees them."""

    def __init__(self, board: LoadBoard, process: int, directory: str, secret: str) -> None:
        self.board = board
        self.process = process
        self._proxies = {
            index: Proxy(socket_path(directory, index), secret, extra=((PASSED, b"1"),))
            for index in range(board.processes)
            if index != process
        }
        #: per slot, the calls passed to each other process and not answered yet
        self._sent: dict[int, dict[int, int]] = {}

    def less_busy(self, pool: VersionPool, scope: Scope) -> int | None:
        """The process to pass the call to, or None: the version's calls are too short to be
        worth it, this process has an idle instance of it, no other has one, or the call was
        passed here already."""
        lowest = pool.lowest()
        if lowest == 0:
            return None
        seconds = pool.call_seconds
        if (
            seconds is not None
            and seconds < PASS_MIN_SECONDS
            and not pool.running_longer_than(PASS_MIN_SECONDS)
        ):
            return None  # waiting behind a call this short costs less than a pass
        other = self.board.less_busy(pool.slot, self.process, lowest, self._sent.get(pool.slot))
        if other is None:
            return None
        for name, _ in scope["headers"]:
            if name == PASSED:
                return None
        return other

    async def pass_on(
        self,
        pool: VersionPool,
        process: int,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
    ) -> bool:
        """Pass the call to ``process``, which answers it; False when that process is not there
        (it died, or its successor is starting): nothing was sent, and this one serves it."""
        sent = self._sent.setdefault(pool.slot, {})
        sent[process] = sent.get(process, 0) + 1
        try:
            return await self._proxies[process].pass_on(
                scope, receive, send, body, unreachable_ok=True
            )
        finally:
            if sent[process] == 1:
                del sent[process]
                if not sent and self._sent.get(pool.slot) is sent:
                    del self._sent[pool.slot]
            else:
                sent[process] -= 1

    async def close(self) -> None:
        for proxy in self._proxies.values():
            await proxy.close()
