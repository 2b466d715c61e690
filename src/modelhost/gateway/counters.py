"""The token counters: each limited access token's rate bucket and quota usage, in memory that
the main server process and its gateway processes share (setting ``gateway_processes``), the
way they share the load board (:mod:`modelhost.gateway.board`).

Each access token with a rate or a quota has a slot (a row of 32 bytes), given by the main
process with the route table and loaded with the usage the database kept. A row holds the
bucket's calls left and when it was last filled, and the quota window's key and calls used.

Unlike the board's cells, which only steer, a row decides whether a call is admitted, so with
gateway processes every change to a row is a read-modify-write under an exclusive POSIX record
lock on that row's bytes (``fcntl.lockf``): two processes never both take the last call of a
bucket or of a quota. The lock is per row, so tokens never wait for each other, and is held for
a few microseconds (no IO, no await inside). Record locks belong to a process, not a thread:
only the event loop's thread of each process changes rows. With one process (the default) there
is nobody to exclude, and no lock is taken: a change is one uninterrupted stretch of Python on
the event loop. Calls of tokens without limits never come here.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
from dataclasses import dataclass, field

from modelhost import token_limits
from modelhost.token_limits import Quota, Rate

#: limited tokens at once, across every model (more go unlimited until a slot is free: logged)
SLOTS = 16384
#: calls left in the bucket, when it was last filled (0: never, so full), quota window, used
_ROW = struct.Struct("=ddqq")
_SIZE = _ROW.size
_unpack = _ROW.unpack_from
_pack = _ROW.pack_into
_WINDOW = struct.Struct("=qq")
_WINDOW_OFFSET = 16
_DAY = 86400


@dataclass(frozen=True)
class TokenLimit:
    """A token's limits as a gateway applies them: its slot, its name (for messages), its rate
    and its quota (None: none); the numbers a call needs are worked out once, here."""

    slot: int
    name: str
    rate: Rate | None
    quota: Quota | None
    #: calls per second the bucket refills with (0: no rate), and the most it holds
    per_second: float = field(init=False, repr=False)
    burst: float = field(init=False, repr=False)
    #: calls per window (0: no quota), and whether the window is a day (else a month)
    quota_count: int = field(init=False, repr=False)
    per_day: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rate, quota = self.rate, self.quota
        object.__setattr__(self, "per_second", rate.per_second if rate is not None else 0.0)
        object.__setattr__(self, "burst", rate.burst if rate is not None else 0.0)
        object.__setattr__(self, "quota_count", quota.count if quota is not None else 0)
        object.__setattr__(self, "per_day", quota is not None and quota.unit == "day")


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
        shared = fd is not None
        if fd is None:
            # Close-on-exec: gateway processes get it passed explicitly, and nothing else that
            # the server starts may (uvloop's subprocesses inherit every inheritable fd, and a
            # model could reset or use up other models' token limits through it).
            fd = os.memfd_create("modelhost-token-counters", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        else:
            os.set_inheritable(fd, False)  # passed to this process: to no process it starts
        self.fd = fd
        #: whether other processes change the rows too (then each change takes the row's lock);
        #: made here, they are this process's alone until :meth:`share`
        self.shared = shared
        self._cells = mmap.mmap(fd, size)
        self._free = list(range(SLOTS - 1, -1, -1))  # the main process hands slots out
        self._windows = token_limits.Windows()

    # ------------------------------------------------------------------ main process

    def share(self) -> None:
        """Other processes are about to get the memory (gateway processes): lock from now on."""
        self.shared = True

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
        offset = limit.slot * _SIZE
        shared = self.shared
        if shared:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, _SIZE, offset)
        try:
            left, filled, window, used = _unpack(self._cells, offset)
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
                filled = now
            count = limit.quota_count
            if count:
                if limit.per_day:
                    key = int(now // _DAY)
                    resets_at = float((key + 1) * _DAY)
                else:
                    key, resets_at = self._windows("month", now)
                if key != window:
                    window, used = key, 0
                if used >= count:
                    refusal = Refusal("quota", resets_at - now, resets_at)
                elif refusal is None:
                    used += 1
            if refusal is None and rate:
                left -= 1.0
            _pack(self._cells, offset, left, filled, window, used)
            return refusal
        finally:
            if shared:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, _SIZE, offset)

    def _locked(self, slot: int) -> _RowLock:
        return _RowLock(self.fd, slot * _ROW.size)


class _RowLock:
    def __init__(self, fd: int, offset: int) -> None:
        self._fd, self._offset = fd, offset

    def __enter__(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _ROW.size, self._offset)

    def __exit__(self, *_: object) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, _ROW.size, self._offset)
