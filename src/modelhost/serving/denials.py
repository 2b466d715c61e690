"""Denied invocations, written to the audit log at a bounded rate.

The gateway queues a :class:`~modelhost.gateway.auth.Denial` for each call it refused; each
reconcile tick drains the queue here. At most ``DENIALS_PER_WINDOW`` per model per window are
written; the rest are counted, and the count is written when the window ends, so a flood of
bad tokens cannot fill the disk.
"""

from __future__ import annotations

import time
from collections import deque

import orjson

from modelhost import events
from modelhost.db.repo import Repo
from modelhost.gateway.auth import Denial

#: Denied invocations written to the audit log per model per window; the rest are counted.
DENIALS_PER_WINDOW = 20
DENIAL_WINDOW_SECONDS = 60.0


class DenialLog:
    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._window: dict[str, tuple[float, int, int]] = {}  # model id -> start, written, dropped

    def drain(self, denials: deque[Denial]) -> None:
        """Write denied invocations to the audit log, at most a few per model per minute."""
        now = time.monotonic()
        while denials:
            denial = denials.popleft()
            window_start, written, dropped = self._window.get(denial.model_id, (now, 0, 0))
            if now - window_start > DENIAL_WINDOW_SECONDS:
                if dropped:
                    self._write(denial, f"{dropped} more denied calls not recorded")
                window_start, written, dropped = now, 0, 0
            if written < DENIALS_PER_WINDOW:
                self._write(denial, denial.reason)
                written += 1
            else:
                dropped += 1
            self._window[denial.model_id] = (window_start, written, dropped)

    def _write(self, denial: Denial, reason: str) -> None:
        events.write(
            self.repo,
            events.INVOKE,
            actor_id=None,
            actor="anonymous",
            model_id=denial.model_id,
            model=denial.model,
            version=None,
            source_ip=denial.source_ip,
            outcome="denied",
            request_id=denial.request_id,
            detail=orjson.dumps({"reason": reason}).decode(),
        )
