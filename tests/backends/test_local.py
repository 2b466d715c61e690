"""The local backend with real worker processes, unsandboxed (the sandbox has its own tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from modelhost import errors
from modelhost.backends.attached import spec_from_json, spec_to_json
from modelhost.backends.base import InstanceSpec, InstanceState
from modelhost.backends.local import LocalBackend, tail_lines
from modelhost.sandbox import Unconfined
from tests.helpers import PROJECTS

LOAD_TIMEOUT = 30.0


def _spec(tmp_path: Path, project: str, file: str, function: str) -> InstanceSpec:
    workdir = tmp_path / "work"
    shutil.copytree(PROJECTS / project, workdir)
    return InstanceSpec(
        instance_id="i-1",
        model_id="m-1",
        version_id="v-1",
        version_number=1,
        workdir=workdir,
        file=file,
        function=function,
        interpreter=sys.executable,
        log_path=tmp_path / "logs" / "v1-i-1.log",
    )


async def _until(check: Callable[[], bool], timeout: float = LOAD_TIMEOUT) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


def _run(test: Callable[[LocalBackend, list[int]], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = LocalBackend(Unconfined("tests"))
        changes: list[int] = []
        backend.set_listener(lambda: changes.append(1))
        try:
            await test(backend, changes)
        finally:
            await backend.close()

    asyncio.run(main())


def test_a_started_instance_loads_the_function_answers_calls_and_stops_on_request(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, "calc", "calc.py", "add")

    async def test(backend: LocalBackend, changes: list[int]) -> None:
        instance = await backend.start(spec, LOAD_TIMEOUT)
        await _until(lambda: instance.state is not InstanceState.STARTING)
        assert instance.state is InstanceState.READY, instance.failure
        assert changes, "the backend tells its listener an instance changed state"
        assert instance.signature is not None
        assert "add" in instance.signature
        assert instance.pid is not None
        assert backend.instances() == [instance]
        result = await instance.call("R" * 16, b'{"data": {"x": 2, "y": 3}}', 10)
        assert result.result_json == b"5"
        await backend.stop(instance, 1)
        assert backend.instances() == []
        assert instance.state is InstanceState.EXITED

    _run(test)


def test_an_instance_whose_script_fails_to_import_fails_with_the_users_error(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, "import_error", "predict.py", "predict")

    async def test(backend: LocalBackend, changes: list[int]) -> None:
        instance = await backend.start(spec, LOAD_TIMEOUT)
        await _until(lambda: instance.state is not InstanceState.STARTING)
        assert instance.state is InstanceState.FAILED
        assert instance.failure is not None
        assert "Error" in instance.failure

    _run(test)


def test_an_instance_that_does_not_load_in_time_fails_and_is_killed(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "calc", "calc.py", "add")
    (spec.workdir / "calc.py").write_text("import time\ntime.sleep(60)\ndef add(x, y): ...\n")

    async def test(backend: LocalBackend, changes: list[int]) -> None:
        instance = await backend.start(spec, 0.5)
        await _until(lambda: instance.state is InstanceState.FAILED)
        assert instance.failure is not None
        assert "load_timeout_seconds" in instance.failure

    _run(test)


def test_an_ended_instance_says_why_in_its_log_and_exits(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "calc", "calc.py", "add")

    async def test(backend: LocalBackend, changes: list[int]) -> None:
        instance = await backend.start(spec, LOAD_TIMEOUT)
        await _until(lambda: instance.state is InstanceState.READY)
        instance.end("memory", "over the memory limit")
        assert (instance.ended_by, instance.state) == ("memory", InstanceState.EXITED)
        await _until(lambda: instance.exit_code is not None)
        assert "over the memory limit" in spec.log_path.read_text()

    _run(test)


def test_starting_an_instance_without_its_working_copy_is_refused(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "calc", "calc.py", "add")
    shutil.rmtree(spec.workdir)

    async def test(backend: LocalBackend, changes: list[int]) -> None:
        with pytest.raises(errors.InternalError, match="working copy"):
            await backend.start(spec, LOAD_TIMEOUT)
        assert backend.instances() == []

    _run(test)


def test_tail_lines_reads_the_last_lines_of_a_log_and_nothing_for_a_missing_one(
    tmp_path: Path,
) -> None:
    log = tmp_path / "instance.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert tail_lines(log, 3) == ["line 97", "line 98", "line 99"]
    assert tail_lines(tmp_path / "missing.log") == []


def test_a_spec_handed_to_a_gateway_process_keeps_what_calls_need(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "calc", "calc.py", "add")
    again = spec_from_json(spec_to_json(spec))
    assert again == InstanceSpec(**{**spec.__dict__, "env": {}})


def test_a_variable_no_environment_can_hold_fails_the_instance_naming_it(tmp_path: Path) -> None:
    # One stored before such values were refused (docs/api.md: values may hold no NUL).
    spec = dataclasses.replace(
        _spec(tmp_path, "calc", "calc.py", "add"),
        env={"MODELHOST_MODEL_NAME": "calc", "TOKEN": "a\0b"},
    )

    async def test(backend: LocalBackend, changes: list[int]) -> None:
        instance = await backend.start(spec, LOAD_TIMEOUT)
        await _until(lambda: instance.state is not InstanceState.STARTING)
        assert instance.state is InstanceState.FAILED
        assert instance.failure is not None
        assert "The environment variable TOKEN cannot be set" in instance.failure
        assert "modelhost env unset calc TOKEN" in instance.failure
        assert "Traceback" not in spec.log_path.read_text()

    _run(test)
