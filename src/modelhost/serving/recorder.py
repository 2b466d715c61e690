"""What the main server process writes in the background, off the call path: the request log's
lines each second, and the per-minute call counts to the database every ten seconds."""

from __future__ import annotations

import asyncio
import logging

from modelhost.gateway.app import Gateway
from modelhost.gateway.requestlog import RequestLogWriter
from modelhost.operations.metrics import FLUSH_SECONDS, CallHistory

logger = logging.getLogger(__name__)

_LOG_SECONDS = 1.0


class Recorder:
    def __init__(
        self, gateway: Gateway, history: CallHistory, writer: RequestLogWriter | None
    ) -> None:
        self.gateway = gateway
        self.history = history
        self.writer = writer

    async def run_forever(self) -> None:
        ticks = 0
        every = max(1, round(FLUSH_SECONDS / _LOG_SECONDS))
        while True:
            await asyncio.sleep(_LOG_SECONDS)
            ticks += 1
            await self.write_log()
            if ticks % every == 0:
                await self.flush_history()

    async def write_log(self) -> None:
        log = self.gateway.request_log
        if log is None or self.writer is None:
            return
        lines = log.take()
        if lines:
            try:
                await asyncio.to_thread(self.writer.write, lines)
            except OSError:
                count = sum(len(entries) for entries in lines.values())
                logger.exception("could not write %d request log line(s)", count)

    async def flush_history(self) -> None:
        try:
            await self.history.flush()
        except Exception:
            logger.exception("could not write the call metrics; trying again later")

    async def close(self) -> None:
        """Write what is left (after the gateway processes sent their last)."""
        await self.write_log()
        await self.flush_history()
