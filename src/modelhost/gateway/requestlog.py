"""The request log: one line per call (time, request id, model, version, route, status, duration,
source address; never the body, never a token), in a size-rotated file per model,
``logs/<model id>/requests.log``.

The call path only appends a tuple to a list (:meth:`RequestLog.add`); the main server process
turns the tuples into lines and writes them each second, in a thread (:class:`RequestLogWriter`).
A gateway process sends its rows to the main process with its metrics, so one process writes
each file and every call has exactly one line, in the process that answered it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

from modelhost.gateway.routes import ModelRoute, Release, RouteTable

FILE_NAME = "requests.log"

#: (wall time, duration in ms, request id, path, client, status, release)
_Pending = tuple[float, float, str, str, Any, int, "Release | None"]


def route_of(path: str) -> str:
    """The route part of an invocation path: ``latest``, ``labels/prod``, ``versions/2``."""
    parts = path.strip("/").split("/")
    return "/".join(parts[2:-1]) if len(parts) >= 4 else ""


class RequestLog:
    """Calls answered by this process and not yet taken to be written."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        #: rows a gateway process sent (already taken there)
        self._rows: list[list[Any]] = []

    def add_rows(self, rows: Iterable[list[Any]]) -> None:
        self._rows.extend(rows)

    def add(
        self,
        started: float,
        request_id: str,
        scope: MutableMapping[str, Any],
        status: int,
        release: Release | None,
    ) -> None:
        self._pending.append(
            (
                time.time(),
                (time.perf_counter() - started) * 1000,
                request_id,
                scope["path"],
                scope.get("client"),
                status,
                release,
            )
        )

    def take(self, table: RouteTable) -> list[list[Any]]:
        """The calls added since the last take, as rows for :class:`RequestLogWriter`: those
        whose model is known (a call to no model has no model's log to go to)."""
        pending, self._pending = self._pending, []
        rows, self._rows = self._rows, []
        routes: dict[str, tuple[ModelRoute | None, str]] = {}  # the same few paths, again and again
        for wall, duration, request_id, path, client, status, release in pending:
            known = routes.get(path)
            if known is None:
                parts = path.strip("/").split("/")
                known = routes[path] = (
                    table.find(parts[1]) if len(parts) > 1 else None,
                    route_of(path),
                )
            route, route_part = known
            if release is not None:
                model_id, number = release.model_id, release.number
            elif route is not None:
                model_id, number = route.model_id, None
            else:
                continue
            rows.append(
                [
                    wall,
                    request_id,
                    model_id,
                    route.name if route is not None else model_id,
                    number,
                    route_part,
                    status,
                    round(duration, 2),
                    client[0] if client else None,
                ]
            )
        return rows


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _iso(wall: float) -> str:
    """``2026-12-06T17:02:17.321Z``: the second's text is made once per second, not per line."""
    second = int(wall)
    micros = round((wall - second) * 1_000_000)  # as datetime rounds it
    if micros == 1_000_000:
        second, micros = second + 1, 0
    if _second[0] != second:
        moment = dt.datetime.fromtimestamp(second, dt.timezone.utc)
        _second[:] = [second, moment.strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{micros // 1000:03d}Z"


def line(row: list[Any]) -> bytes:
    """One row as the JSON line the file holds."""
    wall, request_id, _model_id, name, number, route, status, duration, source = row
    return orjson.dumps(
        {
            "time": _iso(wall),
            "request_id": request_id,
            "model": name,
            "version": number,
            "route": route,
            "status": status,
            "duration_ms": duration,
            "source": source,
        }
    )


class RequestLogWriter:
    """Appends rows to each model's file, moving a full file to ``requests.log.1`` (and that
    one to ``.2``…, keeping ``backups`` of them)."""

    def __init__(self, log_dir: Callable[[str], Path], *, max_bytes: int, backups: int) -> None:
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self.backups = backups

    def write(self, rows: Iterable[list[Any]]) -> None:
        by_model: dict[str, list[bytes]] = {}
        for row in rows:
            by_model.setdefault(row[2], []).append(line(row) + b"\n")
        for model_id, lines in by_model.items():
            directory = self.log_dir(model_id)
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._append(directory / FILE_NAME, lines)

    def _append(self, path: Path, lines: list[bytes]) -> None:
        """Append ``lines``, rotating before the file would pass ``max_bytes``."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        chunk: list[bytes] = []
        for entry in lines:
            if size and size + len(entry) > self.max_bytes:
                self._flush(path, chunk)
                chunk = []
                self._rotate(path)
                size = 0
            chunk.append(entry)
            size += len(entry)
        self._flush(path, chunk)

    @staticmethod
    def _flush(path: Path, chunk: list[bytes]) -> None:
        if chunk:
            with open(path, "ab") as file:
                file.write(b"".join(chunk))

    def _rotate(self, path: Path) -> None:
        for index in range(self.backups, 0, -1):
            older = path.with_name(f"{FILE_NAME}.{index}")
            newer = path if index == 1 else path.with_name(f"{FILE_NAME}.{index - 1}")
            if index == self.backups and older.exists():
                older.unlink()
            if newer.exists():
                os.replace(newer, older)
        if self.backups == 0:
            path.unlink(missing_ok=True)


def read(directory: Path, tail: int) -> list[dict[str, Any]]:
    """The last ``tail`` lines of a model's request log (its backups too), oldest first."""
    files = [directory / FILE_NAME]
    backups = [p for p in directory.glob(f"{FILE_NAME}.*") if p.suffix[1:].isdigit()]
    files += sorted(backups, key=lambda p: int(p.suffix[1:]))
    lines: list[dict[str, Any]] = []
    for path in files:  # newest file first
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        found = []
        for raw in data.splitlines():
            try:
                found.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue  # a line cut by a crash
        lines = found + lines
        if len(lines) >= tail:
            break
    lines.sort(key=lambda entry: entry.get("time", ""))  # gateway processes' lines come late
    return lines[-tail:]
