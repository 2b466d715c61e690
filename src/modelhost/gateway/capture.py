"""Prediction capture: the inputs and outputs of a model's successful calls (all of them, or a
sampled share), kept in Parquet files for export and drift reports.

The call path only appends a tuple to a bounded queue (:meth:`CaptureQueue.add`); when the queue
is full the record is dropped and counted, so the call never waits and memory stays bounded.
A thread (:class:`CaptureWriter`) takes the records each second and writes them to Parquet part
files, partitioned by model, version and hour::

    captures/model=<model id>/version=<n>/hour=<YYYY-MM-DDTHH>/part-<ms>-<pid>-<seq>.parquet

Every process that answers calls (the main one and each gateway process) has its own queue and
writer and writes its own part files, so no file has two writers. A part file is written under a
hidden name and renamed into place when complete; folders are 0700 and files 0600, readable only
by the server's user.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modelhost.gateway.routes import Release

logger = logging.getLogger(__name__)

DIRECTORY = "captures"
#: the columns of every part file, in order
COLUMNS = ("time", "request_id", "version", "version_id", "input", "output")

_random = random.Random()

#: (wall time, model id, version number, version id, request id, request body, result JSON)
Record = tuple[float, str, int, str, str, bytes, bytes]


@dataclass(frozen=True)
class CaptureOptions:
    """Where and how a gateway process writes the calls it captures (its own part files)."""

    directory: str = ""
    max_records: int = 10_000
    max_record_bytes: int = 1_000_000


class CaptureQueue:
    """Records taken on the call path and not yet written; at most ``max_records`` of them,
    each at most ``max_record_bytes`` (input and output together). Appended to by the event
    loop, emptied by the writer's thread (a deque's append and popleft are thread-safe)."""

    def __init__(self, max_records: int = 10_000, max_record_bytes: int = 1_000_000) -> None:
        self.max_records = max_records
        self.max_record_bytes = max_record_bytes
        self._records: collections.deque[Record] = collections.deque()
        #: model id -> records dropped since start-up (a full queue or a record too large)
        self.dropped: dict[str, int] = {}
        self._reported: dict[str, int] = {}

    def add(
        self, share: float, release: Release, request_id: str, body: bytes, result: bytes
    ) -> None:
        """Capture one successful call, with probability ``share``."""
        if share < 1.0 and _random.random() >= share:
            return
        if (
            len(self._records) >= self.max_records
            or len(body) + len(result) > self.max_record_bytes
        ):
            self.dropped[release.model_id] = self.dropped.get(release.model_id, 0) + 1
            return
        self._records.append(
            (
                time.time(),
                release.model_id,
                release.number,
                release.version_id,
                request_id,
                body,
                result,
            )
        )

    def __len__(self) -> int:
        return len(self._records)

    def drain(self) -> list[Record]:
        """The records queued now, oldest first, taken out of the queue."""
        records = []
        popleft = self._records.popleft
        for _ in range(len(self._records)):
            records.append(popleft())
        return records

    def take_dropped(self) -> dict[str, int]:
        """Records dropped since the last call, per model (a gateway process sends these)."""
        news = {
            model_id: count - self._reported.get(model_id, 0)
            for model_id, count in self.dropped.items()
            if count != self._reported.get(model_id, 0)
        }
        self._reported = dict(self.dropped)
        return news

    def merge_dropped(self, counts: dict[str, int]) -> None:
        """Add what a gateway process dropped (its :meth:`take_dropped`)."""
        for model_id, count in counts.items():
            self.dropped[model_id] = self.dropped.get(model_id, 0) + int(count)


def hour_of(wall: float) -> str:
    """The hour partition a record at ``wall`` (seconds since the epoch) belongs to."""
    return dt.datetime.fromtimestamp(wall, dt.timezone.utc).strftime("%Y-%m-%dT%H")


def partition_root(home: Path, model_id: str) -> Path:
    """The folder of one model's captures in the data directory ``home``."""
    return home / DIRECTORY / f"model={model_id}"


def partition(root: Path, model_id: str, number: int, hour: str) -> Path:
    return root / f"model={model_id}" / f"version={number}" / f"hour={hour}"


def prune(root: Path, retention_days: int, now: float | None = None) -> list[Path]:
    """Delete the hour partitions under ``root`` that ended more than ``retention_days`` ago
    (and folders left empty); returns the partitions deleted."""
    cutoff = dt.datetime.fromtimestamp(
        (time.time() if now is None else now) - retention_days * 86400, dt.timezone.utc
    )
    removed = []
    for folder in sorted(root.glob("model=*/version=*/hour=*")):
        try:
            start = dt.datetime.strptime(folder.name[5:], "%Y-%m-%dT%H")
        except ValueError:
            continue
        if start.replace(tzinfo=dt.timezone.utc) + dt.timedelta(hours=1) <= cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    for folder in sorted(root.glob("model=*/version=*")) + sorted(root.glob("model=*")):
        with contextlib.suppress(OSError):  # not empty: still has partitions
            folder.rmdir()
    return removed


def private_dirs(root: Path, folder: Path) -> None:
    """Make ``folder`` and every folder between ``root``'s parent and it, each 0700."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
        if path == root:
            break
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)


class CaptureWriter:
    """Writes ``queue``'s records to part files under ``root`` each ``interval`` seconds, in a
    thread of its own; :meth:`stop` writes what is left."""

    def __init__(self, queue: CaptureQueue, root: Path, *, interval: float = 1.0) -> None:
        self.queue = queue
        self.root = root
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:
                logger.exception("writing captured calls failed; trying again")

    def flush(self) -> int:
        """Write the queued records now; how many were written."""
        records = self.queue.drain()
        if not records:
            return 0
        groups: dict[tuple[str, int, str], list[Record]] = {}
        for record in records:
            key = (record[1], record[2], hour_of(record[0]))
            groups.setdefault(key, []).append(record)
        for (model_id, number, hour), group in groups.items():
            self._write(partition(self.root, model_id, number, hour), group)
        return len(records)

    def _write(self, folder: Path, records: Iterable[Record]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = list(records)
        table = pa.table(
            {
                "time": pa.array([round(r[0] * 1000) for r in rows], pa.timestamp("ms", tz="UTC")),
                "request_id": pa.array([r[4] for r in rows], pa.string()),
                "version": pa.array([r[2] for r in rows], pa.int32()),
                "version_id": pa.array([r[3] for r in rows], pa.string()),
                "input": pa.array([r[5].decode("utf-8", "replace") for r in rows], pa.string()),
                "output": pa.array([r[6].decode("utf-8", "replace") for r in rows], pa.string()),
            }
        )
        private_dirs(self.root, folder)
        self._seq += 1
        name = f"part-{round(time.time() * 1000)}-{os.getpid()}-{self._seq}.parquet"
        staging = folder / f".{name}.tmp"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            pq.write_table(table, file)
        os.replace(staging, folder / name)
