"""The request log: one line per call (time, request id, model, version, route, status, duration,
source address; never the body, never a token), in a size-rotated file per model,
``logs/<model id>/requests.log``.

The call path keeps the call's fields (:meth:`RequestLog.add`), and every 64 calls their lines
are made together; the main server process writes the lines each second, in a thread
(:class:`RequestLogWriter`). A gateway process sends its lines to the main process with its
metrics, so one process writes each file and every call has exactly one line, in the process
that answered it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

from modelhost.gateway.routes import Release, RouteTable

FILE_NAME = "requests.log"
#: calls whose lines are made together: a line made alone, between a call's system calls,
#: costs about three times one made in a run of them (the caches are cold), and 64 lines at once
#: hold the event loop for a fraction of a millisecond
LINES_AT_ONCE = 64


def route_of(path: str) -> str:
    """The route part of an invocation path: ``latest``, ``labels/prod``, ``versions/2``."""
    parts = path.strip("/").split("/")
    return "/".join(parts[2:-1]) if len(parts) >= 4 else ""


class RequestLog:
    """The lines of calls answered by this process (or sent by a gateway process) and not yet
    taken to be written, by model id.

    The lines are made on the call path, :data:`LINES_AT_ONCE` at a time: made one by one
    each cost about three times as much, and thousands made at once each second held the event
    loop (and the GIL, in the writer's thread) for tens of milliseconds, which every call
    waiting then paid (measured: ``add`` at 32 connections had a p99 of 86 ms with the request
    log on, 2.4 ms with it off).
    """

    def __init__(self) -> None:
        self._lines: dict[str, list[bytes]] = {}
        #: the calls added whose lines are not made yet
        self._calls: list[tuple[Any, ...]] = []
        #: (invocation path, version id) -> :func:`_form`, for the calls of :attr:`_table`
        self._forms: dict[tuple[str, str | None], tuple[str | None, str]] = {}
        self._table: RouteTable | None = None

    def add(
        self,
        started: float,
        request_id: str,
        scope: MutableMapping[str, Any],
        status: int,
        release: Release | None,
        table: RouteTable,
    ) -> None:
        """The line of a call that began at ``started`` (``time.perf_counter()``) and was
        answered with ``status`` by ``release`` (None: by no version), made with the next
        :data:`LINES_AT_ONCE` calls' or when the lines are taken. A call to no model has no
        model's log to go to, and no line."""
        calls = self._calls
        calls.append(
            (
                time.time(),
                time.perf_counter() - started,
                request_id,
                scope["path"],
                scope.get("client"),
                status,
                release,
                table,
            )
        )
        if len(calls) >= LINES_AT_ONCE:
            self._make_lines()

    def _make_lines(self) -> None:
        calls, self._calls = self._calls, []
        by_model = self._lines
        forms = self._forms
        for wall, seconds, request_id, path, client, status, release, table in calls:
            if table is not self._table:  # a model renamed or gone: make the forms again
                self._table = table
                forms = self._forms = {}
            key = (path, release.version_id if release is not None else None)
            form = forms.get(key)
            if form is None:
                form = _form(path, release, table)
                if len(forms) < 1024:  # made-up paths cannot grow it without end
                    forms[key] = form
            model_id, text = form
            if model_id is None:
                continue  # a call to no model: no model's log to go to
            address = client[0] if client else None
            source = _sources.get(address)
            if source is None:
                source = _source(address)
            entry = (text % (_iso(wall), request_id, status, seconds * 1000, source)).encode()
            lines = by_model.get(model_id)
            if lines is None:
                by_model[model_id] = [entry]
            else:
                lines.append(entry)

    def add_lines(self, by_model: dict[str, str]) -> None:
        """The lines a gateway process sent (:meth:`export`)."""
        for model_id, text in by_model.items():
            self._lines.setdefault(model_id, []).extend(
                entry.encode() for entry in text.splitlines(keepends=True)
            )

    def take(self) -> dict[str, list[bytes]]:
        """The lines added since the last take, by model id, for :class:`RequestLogWriter`."""
        self._make_lines()
        lines, self._lines = self._lines, {}
        return lines

    def export(self) -> dict[str, str]:
        """:meth:`take`, as a gateway process sends the lines: one text per model, which is
        one string in JSON."""
        return {model_id: b"".join(lines).decode() for model_id, lines in self.take().items()}


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text
#: source address -> its JSON, for the addresses seen lately
_sources: dict[str | None, str] = {}


def _source(address: str | None) -> str:
    text = orjson.dumps(address).decode()
    if len(_sources) >= 1024:  # many callers: start over rather than grow without end
        _sources.clear()
    _sources[address] = text
    return text


def _form(path: str, release: Release | None, table: RouteTable) -> tuple[str | None, str]:
    """The model id of the log a call to ``path`` answered by ``release`` goes to (None: no
    model's), and its line with the call's own fields left as ``%`` fields: time, request id,
    status, duration and source. The rest is the same for every such call."""
    parts = path.strip("/").split("/")
    route = table.find(parts[1]) if len(parts) > 1 else None
    if release is not None:
        model_id, number = release.model_id, release.number
    elif route is not None:
        model_id, number = route.model_id, None
    else:
        return None, ""
    fixed = b",".join(
        (
            b'"model":' + orjson.dumps(route.name if route is not None else model_id),
            b'"version":' + orjson.dumps(number),
            b'"route":' + orjson.dumps(route_of(path)),
        )
    )
    text = fixed.decode().replace("%", "%%")
    return (
        model_id,
        '{"time":"%s","request_id":"%s",' + text + ',"status":%d,"duration_ms":%.2f,"source":%s}\n',
    )


def _iso(wall: float) -> str:
    """``2026-12-06T17:02:17.321Z``: the second's text is made once per second, not per line."""
    second = int(wall)
    micros = round((wall - second) * 1_000_000)  # as datetime rounds it
    if micros == 1_000_000:
        second, micros = second + 1, 0
    if _second[0] != second:
        moment = dt.datetime.fromtimestamp(second, dt.timezone.utc)
        _second[:] = [second, moment.strftime("%Y-%m-%dT%H:%M:%S")]
    text: str = _second[1]
    return text + _MILLISECONDS[micros // 1000]


#: the end of a time, by its milliseconds: ``.321Z``
_MILLISECONDS = [f".{n:03d}Z" for n in range(1000)]


def line(row: list[Any]) -> bytes:
    """A row (wall time, request id, model id, model name, version number, route, status,
    duration, source) as the line the file holds."""
    wall, request_id, _model_id, name, number, route, status, duration, source = row
    return _line(wall, request_id, name, number, route, status, duration, source)


def _line(
    wall: float,
    request_id: str,
    name: str,
    number: int | None,
    route: str,
    status: int,
    duration: float,
    source: str | None,
) -> bytes:
    """One call's line: JSON, then a newline."""
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
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


class RequestLogWriter:
    """Appends lines to each model's file, moving a full file to ``requests.log.1`` (and that
    one to ``.2``…, keeping ``backups`` of them)."""

    def __init__(self, log_dir: Callable[[str], Path], *, max_bytes: int, backups: int) -> None:
        self.log_dir = log_dir
        self.max_bytes = max_bytes
        self.backups = backups

    def write(self, by_model: dict[str, list[bytes]]) -> None:
        """Append each model's lines (:meth:`RequestLog.take`) to its file."""
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
