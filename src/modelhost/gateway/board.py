"""The load board: how busy the least busy instance of each version is in every process, in
memory that the main server process and its gateway processes share (setting
``gateway_processes``).

Each instance has one caller, the process it was handed to. A process whose own instances of a
version are all busy reads the board, and when another process has an idle one, passes the call
there (``gateway/peers.py``) instead of sending it ahead to a busy instance of its own: a call
goes to an idle instance when there is one, in any process, as within one process. When every
instance is busy, each process sends its calls ahead to its own: passing a call costs the two
processes several times what the call costs, and under load it would buy nothing (measured in
bench/README.md: passing to merely less busy processes cut `add` at 32 connections to a third).

Each version that runs has a slot (a row), given by the main process with the route table;
each process writes only its own cell of each row: 0 when it holds no instance of the version,
else one more than the calls on its least busy one. Reads race with writes, and a call passed
to a process whose instance became busy meanwhile just waits there: the board steers, it never
admits.
"""

from __future__ import annotations

import mmap
import os

#: versions running at once, across every model (more share the last slot, which is never read)
SLOTS = 4096
#: a slot for versions past :data:`SLOTS`: never read, so never steers
NO_SLOT = SLOTS - 1


class LoadBoard:
    def __init__(self, processes: int, fd: int | None = None) -> None:
        """A board for ``processes`` processes; ``fd`` is the shared memory another process
        made (a gateway process gets it from the main one), else it is made here."""
        self.processes = processes
        size = SLOTS * processes
        if fd is None:
            # Close-on-exec: gateway processes get it passed explicitly, and nothing else the
            # server starts may (uvloop's subprocesses inherit every inheritable fd).
            fd = os.memfd_create("modelhost-load-board", os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
        else:
            os.set_inheritable(fd, False)  # passed to this process: to no process it starts
        self.fd = fd
        self._cells = mmap.mmap(fd, size)
        self._free = list(range(NO_SLOT - 1, -1, -1))  # the main process hands slots out

    def slot(self) -> int:
        """A free slot for a version that starts running (main process), its row cleared."""
        if not self._free:
            return NO_SLOT
        slot = self._free.pop()
        start = slot * self.processes
        self._cells[start : start + self.processes] = bytes(self.processes)
        return slot

    def free(self, slot: int) -> None:
        """The version no longer runs (main process): its slot goes to the next one."""
        if slot != NO_SLOT:
            self._free.append(slot)

    def set(self, slot: int, process: int, lowest: int | None) -> None:
        """This process's least busy instance of the slot's version has ``lowest`` calls (None:
        it holds none)."""
        cell = 0 if lowest is None else lowest + 1
        self._cells[slot * self.processes + process] = cell if cell < 255 else 255

    def clear(self, slot: int, process: int) -> None:
        self._cells[slot * self.processes + process] = 0

    def forget(self, process: int) -> None:
        """The process died (main process): it holds nothing any more, in any slot."""
        for slot in range(SLOTS):
            self._cells[slot * self.processes + process] = 0

    def holder(self, slot: int, process: int) -> int | None:
        """Where a connection that calls the slot's version should live: None when this
        process holds an instance of it (or nobody does), else the process whose instance of
        it is least busy (:mod:`modelhost.gateway.steering`)."""
        if slot == NO_SLOT:
            return None
        start = slot * self.processes
        row = self._cells[start : start + self.processes]
        if row[process]:
            return None
        best, fewest = None, 256
        for index, cell in enumerate(row):
            if 0 < cell < fewest:
                best, fewest = index, cell
        return best

    def less_busy(
        self, slot: int, process: int, lowest: int | None, sent: dict[int, int] | None = None
    ) -> int | None:
        """Another process with an idle instance of the slot's version, or None; when this
        process holds none (``lowest`` None), the process with the least busy one. ``lowest``
        is the calls on this process's least busy instance (0: it has an idle one itself).

        ``sent`` counts the calls this process passed to each other one and is still waiting
        for: a passed call reaches the other process's cell only when that process takes it,
        and calls at once must not all follow the same idle cell meanwhile."""
        if slot == NO_SLOT or lowest == 0:
            return None
        start = slot * self.processes
        row = self._cells[start : start + self.processes]
        # a cell is one more than its calls: 1 is idle, and only idle is worth a pass
        best, fewest = None, 256 if lowest is None else 2
        for index, cell in enumerate(row):
            if cell and sent:
                cell = max(cell, sent.get(index, 0) + 1)
            if 0 < cell < fewest and index != process:
                best, fewest = index, cell
        return best
