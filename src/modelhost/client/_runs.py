"""The client's runs and schedules methods (mixed into :class:`modelhost.client.Client`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from modelhost import urls
from modelhost.builder.packing import (
    check_project_directory,
    collect_files,
    count_files,
    human_size,
    pack_project,
)
from modelhost.client import _arguments
from modelhost.client._results import Run, Schedule

FINISHED = ("succeeded", "failed", "cancelled", "skipped", "denied")


class RunsMixin:
    url: str

    def _request(self, method: str, path: str, *, api_key: bool = True, **kwargs: Any) -> Any:
        raise NotImplementedError  # provided by Client

    @contextmanager
    def _packed(
        self, path: str | Path, exclude: Sequence[str], say: Callable[[str], None]
    ) -> Iterator[BinaryIO]:
        root = Path(path)
        check_project_directory(root)
        files = collect_files(root, exclude)
        size = human_size(sum(f.size for f in files))
        say(f"Packing {count_files(len(files))} ({size}) from {root}")
        with pack_project(root, files) as archive:
            say(f"Uploading to {self.url}")
            yield archive

    def _upload(
        self, path: str, archive: BinaryIO, params: dict[str, Any], method: str = "POST"
    ) -> Any:
        return self._request(
            method,
            path,
            params={k: v for k, v in params.items() if v is not None},
            headers={"Content-Type": "application/gzip"},
            content=iter(lambda: archive.read(1 << 20), b""),
        )

    # ------------------------------------------------------------------ runs

    def start_run(
        self,
        path: str | Path,
        command: Sequence[str],
        *,
        model: str | None = None,
        file: str | None = None,
        function: str | None = None,
        exclude: Sequence[str] = (),
        timeout: float | None = None,
        description: str = "",
        on_progress: Callable[[str], None] | None = None,
        environment: str | None = None,
    ) -> Run:
        """Run ``command`` on the server in a fresh copy of the project at ``path``.

        With ``model``, ``file`` and ``function``, a run that exits with status 0 publishes
        its directory as the next version of ``model``. Returns the queued run at once;
        :meth:`follow_run` waits for it.

        ``command`` is a list of arguments, run without a shell; a string (``"python
        train.py"``), like a string ``exclude``, is a :class:`~modelhost.errors.BadRequest`
        saying what to pass, before anything is packed.

        >>> run = client.start_run("examples/wine_quality", ["python", "train.py"],
        ...     model="wine-quality", file="predict.py", function="predict")  # doctest: +SKIP
        """
        command = _arguments.command("command", command)
        exclude = _arguments.patterns("exclude", exclude)
        params = {
            "command": command,
            "model": model,
            "file": file,
            "function": function,
            "timeout_seconds": timeout,
            "description": description,
            "environment": environment,
        }
        with self._packed(path, exclude, on_progress or (lambda _m: None)) as archive:
            return Run.from_json(self._upload(urls.api_runs(), archive, params))

    def runs(
        self, *, model: str | None = None, schedule: str | None = None, limit: int = 50
    ) -> list[Run]:
        """The runs you may see, newest first."""
        params = {"model": model, "schedule": schedule, "limit": limit}
        params = {k: v for k, v in params.items() if v is not None}
        found = self._request("GET", urls.api_runs(), params=params)["runs"]
        return [Run.from_json(r) for r in found]

    def run(self, run_id: str) -> Run:
        """One run: its status, message, exit code, duration and published version."""
        return Run.from_json(self._request("GET", urls.api_run(run_id)))

    def run_logs(self, run_id: str, offset: int = 0) -> dict[str, Any]:
        """The run's log from byte ``offset``: ``text``, next ``offset``, ``finished``."""
        return self._request("GET", urls.api_run(run_id, "logs"), params={"offset": offset})

    def follow_run(
        self,
        run_id: str,
        *,
        on_output: Callable[[str], None] | None = None,
        poll: float = 0.5,
    ) -> Run:
        """Wait for a run to finish, passing its log text to ``on_output`` as it grows."""
        offset = 0
        while True:
            chunk = self.run_logs(run_id, offset)
            if chunk["text"] and on_output is not None:
                on_output(chunk["text"])
            offset = chunk["offset"]
            if chunk["finished"] and not chunk["text"]:
                return self.run(run_id)
            if not chunk["text"]:
                time.sleep(poll)

    def cancel_run(self, run_id: str) -> Run:
        """Cancel a queued run, or kill a running one (its whole process group)."""
        return Run.from_json(self._request("POST", urls.api_run(run_id, "cancel")))

    # ------------------------------------------------------------------ schedules

    def create_schedule(
        self,
        path: str | Path,
        command: Sequence[str],
        *,
        cron: str | None = None,
        every: str | None = None,
        timezone: str | None = None,
        model: str | None = None,
        file: str | None = None,
        function: str | None = None,
        exclude: Sequence[str] = (),
        timeout: float | None = None,
        description: str = "",
        on_progress: Callable[[str], None] | None = None,
        environment: str | None = None,
    ) -> Schedule:
        """Run ``command`` on a schedule in a fresh copy of the project as it is now.

        ``cron`` is five fields read in ``timezone`` (default UTC), or ``every`` an interval
        such as ``"6h"``. With ``model``, ``file`` and ``function`` each successful run
        publishes the next version. ``command`` and ``exclude`` are lists, as for
        :meth:`start_run`.

        >>> client.create_schedule("examples/wine_quality", ["python", "train.py"],
        ...     cron="0 2 * * *", timezone="Europe/Berlin", model="wine-quality",
        ...     file="predict.py", function="predict")  # doctest: +SKIP
        """
        command = _arguments.command("command", command)
        exclude = _arguments.patterns("exclude", exclude)
        params = {
            "command": command,
            "cron": cron,
            "every": every,
            "timezone": timezone,
            "model": model,
            "file": file,
            "function": function,
            "timeout_seconds": timeout,
            "description": description,
            "environment": environment,
        }
        with self._packed(path, exclude, on_progress or (lambda _m: None)) as archive:
            return Schedule.from_json(self._upload(urls.api_schedules(), archive, params))

    def replace_schedule(
        self,
        schedule_id: str,
        path: str | Path,
        command: Sequence[str],
        *,
        cron: str | None = None,
        every: str | None = None,
        timezone: str | None = None,
        model: str | None = None,
        file: str | None = None,
        function: str | None = None,
        exclude: Sequence[str] = (),
        timeout: float | None = None,
        description: str = "",
        on_progress: Callable[[str], None] | None = None,
        environment: str | None = None,
    ) -> Schedule:
        """Replace a schedule's project (uploaded again), command, timing, target and timeout.

        It keeps its id, its runs and whether it is paused; the next run counts from now.
        ``command`` and ``exclude`` are lists, as for :meth:`start_run`.
        """
        command = _arguments.command("command", command)
        exclude = _arguments.patterns("exclude", exclude)
        params = {
            "command": command,
            "cron": cron,
            "every": every,
            "timezone": timezone,
            "model": model,
            "file": file,
            "function": function,
            "timeout_seconds": timeout,
            "description": description,
            "environment": environment,
        }
        with self._packed(path, exclude, on_progress or (lambda _m: None)) as archive:
            path = urls.api_schedule(schedule_id)
            return Schedule.from_json(self._upload(path, archive, params, method="PUT"))

    def schedules(self) -> list[Schedule]:
        found = self._request("GET", urls.api_schedules())["schedules"]
        return [Schedule.from_json(s) for s in found]

    def schedule(self, schedule_id: str) -> Schedule:
        """One schedule, with its next run time and its last run."""
        return Schedule.from_json(self._request("GET", urls.api_schedule(schedule_id)))

    def pause_schedule(self, schedule_id: str) -> Schedule:
        path = urls.api_schedule(schedule_id, "pause")
        return Schedule.from_json(self._request("POST", path))

    def take_over_schedule(self, schedule_id: str) -> Schedule:
        """Make the schedule act as you (you own its model, or are an admin); it keeps
        whether it is paused."""
        path = urls.api_schedule(schedule_id, "take-over")
        return Schedule.from_json(self._request("POST", path))

    def resume_schedule(self, schedule_id: str) -> Schedule:
        """Fire again from the next due time after now (paused ticks are not made up)."""
        path = urls.api_schedule(schedule_id, "resume")
        return Schedule.from_json(self._request("POST", path))

    def delete_schedule(self, schedule_id: str) -> None:
        self._request("DELETE", urls.api_schedule(schedule_id))
