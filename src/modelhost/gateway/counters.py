"""The token counters: each limited access token's rate bucket and quota usage, in memory that
the main server process and its gateway processes share (setting ``gateway_processes``), the
way they share the load board (:mod:`modelhost.gateway.board`).

Each access token with a rate or a quota has a slot (a row of 32 bytes), given by the main
process with the route table and loaded with the usage the database kept. A row holds the
bucket's calls left and when it was last filled, and the quota window's key and calls used.

Unlike the board's cells, which only steer, a row decides whether a call is admitted, so every
change to a row is a read-modify-write under an exclusive POSIX record lock on that row's bytes
(``fcntl.lockf``): two processes never both take the last call of a bucket or of a quota. The
lock is per row, so tokens never wait for each other, and is held for a few microseconds (no IO,
no await inside). Record locks belong to a process, not a thread: only the event loop's thread
of each process changes rows. Calls of tokens without limits never come here.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
from dataclasses import dataclass

from modelhost import token_limits
from modelhost.token_limits import Quota, Rate

#: limited tokens at once, across every model (more go unlimited until a slot is free: logged)
SLOTS = 16384
#: calls left in the bucket, when it was last filled (0: never, so full), quota window, used
_ROW = struct.Struct("=ddqq")
_WINDOW = struct.Struct("=qq")
_WINDOW_OFFSET = 16


@dataclass(frozen=True)
class TokenLimit:
    """A token's limits as a gateway applies them: its slot, its name (for messages), its rate
    and its quota (None: none)."""

    slot: int
    name: str
    rate: Rate | None
    quota: Quota | None

    @property
    def per_second(self) -> float:
        return self.rate.per_second if self.rate is not None else 0.0

    @property
    def burst(self) -> float:
        return self.rate.burst if self.rate is not None else 0.0


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused: ``"rate"`` or ``"quota"``, and the seconds until it would pass
    (``resets_at``: when the quota's next window starts, seconds since 1970)."""

    limit: str
    wait: float
    resets_at: float = 0.0

    @property
    def retry_after(self) -> int:
        """Whole seconds for ``Retry-After``: at least 1, never short of the wait."""
        return max(1, math.ceil(self.wait))


class TokenCounters:
    def __init__(self, fd: int | None = None) -> None:
        """The counters; ``fd`` is the shared memory the main process made (a gateway process
        gets it from it), else it is made here."""
        size = SLOTS * _ROW.size
        if fd is None:
            fd = os.memfd_create("modelhost-token-counters", 0)  # passed explicitly
            os.ftruncate(fd, size)
        self.fd = fd
        self._cells = mmap.mmap(fd, size)
        self._free = list(range(SLOTS - 1, -1, -1))  # the main process hands slots out
        self._windows = token_limits.Windows()

    # ------------------------------------------------------------------ main process

    def slot(self, window: int, used: int) -> int | None:
        """A free slot for a token that has limits, with its quota window's key and calls used
        as the database kept them, and a full bucket; None when every slot is taken."""
        if not self._free:
            return None
        slot = self._free.pop()
        with self._locked(slot):
            _ROW.pack_into(self._cells, slot * _ROW.size, 0.0, 0.0, window, used)
        return slot

    def free(self, slot: int) -> None:
        self._free.append(slot)

    def usage(self, slot: int) -> tuple[int, int]:
        """The slot's quota window key and calls used in it. Read without the lock: for
        display, and for the database, where the next flush corrects a read that raced."""
        window, used = _WINDOW.unpack_from(self._cells, slot * _ROW.size + _WINDOW_OFFSET)
        return window, used

    # ------------------------------------------------------------------ every process

    def take(self, limit: TokenLimit, now: float) -> Refusal | None:
        """Admit one call of the token (None) or say why not; ``now`` is seconds since 1970."""
        offset = limit.slot * _ROW.size
        fcntl.lockf(self.fd, fcntl.LOCK_EX, _ROW.size, offset)
        try:
            left, filled, window, used = _ROW.unpack_from(self._cells, offset)
            refusal = None
            rate = limit.per_second
            if rate:
                if filled == 0.0:
                    left = limit.burst
                elif now > filled:
                    left = min(limit.burst, left + (now - filled) * rate)
                else:  # another process filled it a moment "later": nothing to add
                    now = filled
                if left < 1.0:
                    refusal = Refusal("rate", (1.0 - left) / rate)
            quota = limit.quota
            if quota is not None:
                key, resets_at = self._windows(quota.unit, now)
                if key != window:
                    window, used = key, 0
                if used >= quota.count:
                    refusal = Refusal("quota", resets_at - now, resets_at)
                elif refusal is None:
                    used += 1
            if refusal is None and rate:
                left -= 1.0
            _ROW.pack_into(self._cells, offset, left, now if rate else filled, window, used)
            return refusal
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, _ROW.size, offset)

    def _locked(self, slot: int) -> _RowLock:
        return _RowLock(self.fd, slot * _ROW.size)


class _RowLock:
    def __init__(self, fd: int, offset: int) -> None:
        self._fd, self._offset = fd, offset

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _ROW.size, self._offset)

    def __exit__(self, *_: object) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, _ROW.size, self._offset)
