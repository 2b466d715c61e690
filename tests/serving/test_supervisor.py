"""The instance supervisor with the in-process fake backend: starting, stopping, back-off after
crashes, health, the memory limit, and what it records of builds."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelhost.app import create_app
from modelhost.backends import cpu_limit
from modelhost.backends.base import InstanceState
from modelhost.db.repo import Model, Repo, Version
from modelhost.reconciler import Reconciler
from modelhost.serving.supervisor import UNHEALTHY_AFTER, Supervisor
from modelhost.settings import load_settings
from tests.fakes import FakeBackend, FakeInstance
from tests.helpers import PROJECTS


@dataclass
class World:
    supervisor: Supervisor
    backend: FakeBackend
    repo: Repo
    model: Model

    def version(self, status: str = "building", **values: object) -> Version:
        fields: dict[str, object] = {
            "bundle_sha256": "0" * 64,
            "bundle_bytes": 1,
            "bundle_files": 1,
            "file": "calc.py",
            "function": "add",
            "environment": "server",
            "description": "",
            "author_id": self.model.owner_id,
            "status": status,
        }
        version = self.repo.create_version(self.model.id, **{**fields, **values})
        # the working copy is there already: no bundle to extract
        shutil.copytree(PROJECTS / "calc", self.supervisor.children.instance_workdir(version.id))
        return version

    def fresh(self, version: Version) -> Version:
        found = self.repo.get_version_by_id(version.id)
        assert found is not None
        return found


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = load_settings(
        {"home": str(tmp_path / "home"), "instance_memory_limit_mb": 100}, environ={}
    )
    backend = FakeBackend()
    app = create_app(settings, backend=backend)
    reconciler = app.services.reconciler
    assert isinstance(reconciler, Reconciler)
    repo = app.services.repo
    owner = repo.create_user("alice", is_admin=False)
    model = repo.create_model("calc", owner_id=owner.id, description="", instance_count=2)
    yield World(reconciler.supervisor, backend, repo, model)
    repo.engine.dispose()


def test_converging_starts_the_models_instance_count_and_rotates_a_ready_versions(
    world: World,
) -> None:
    version = world.version(status="ready")
    asyncio.run(world.supervisor.converge(world.model, version))
    assert len(world.backend.started) == 2
    assert all(i.state is InstanceState.READY for i in world.backend.started)
    assert world.supervisor.fully_ready(world.model, version)
    pool = world.supervisor.router.pool(version.id)
    assert pool is not None
    assert sorted(pool.instances(), key=id) == sorted(world.backend.started, key=id)
    env = world.backend.started[0].spec.env
    assert env["MODELHOST_MODEL_VERSION"] == "1"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["HOME"] == str(world.supervisor.children.instance_workdir(version.id))


def test_a_first_ready_instance_passes_the_build_and_deploys_the_newest_version(
    world: World,
) -> None:
    version = world.version()

    async def tick() -> None:
        await world.supervisor.converge(world.model, version)
        await world.supervisor.record_outcomes()

    asyncio.run(tick())
    built = world.fresh(version)
    assert built.status == "ready"
    assert built.signature is not None
    assert "imported calc.py" in built.build_log
    model = world.repo.find_model(world.model.id)
    assert model is not None
    assert model.deployed_version == 1


def test_an_instance_that_fails_to_load_fails_the_build(world: World) -> None:
    version = world.version(function="missing")

    async def tick() -> None:
        await world.supervisor.converge(world.model, version)
        await world.supervisor.record_outcomes()

    asyncio.run(tick())
    failed = world.fresh(version)
    assert failed.status == "failed"
    assert "missing" in failed.build_log
    assert failed.failure is not None
    assert failed.failure.kind == "load"
    assert "missing" in failed.failure.message
    assert world.backend.started == []  # the failed instances were stopped


def test_a_script_that_raises_on_import_fails_with_the_users_traceback_apart(
    world: World,
) -> None:
    version = world.version(file="predict.py", function="predict")
    shutil.copy(
        PROJECTS / "import_error" / "helpers.py",
        world.supervisor.children.instance_workdir(version.id),
    )
    shutil.copy(
        PROJECTS / "import_error" / "predict.py",
        world.supervisor.children.instance_workdir(version.id),
    )

    async def tick() -> None:
        await world.supervisor.converge(world.model, version)
        await world.supervisor.record_outcomes()

    asyncio.run(tick())
    failure = world.fresh(version).failure
    assert failure is not None
    assert failure.kind == "load"
    assert failure.traceback is not None
    assert "Traceback" not in failure.message
    assert "helpers.py" in failure.traceback
    assert "ZeroDivisionError" in failure.message


def test_crashes_in_a_row_back_off_and_mark_the_version_unhealthy_until_one_is_ready(
    world: World,
) -> None:
    version = world.version(status="ready")
    supervisor = world.supervisor
    model = dataclasses.replace(world.model, instance_count=1)

    async def crash_all() -> None:
        for instance in world.backend.instances():
            instance.state = InstanceState.EXITED
        await supervisor.record_outcomes()

    async def scenario() -> None:
        await supervisor.converge(model, version)
        await supervisor.record_outcomes()
        for crash in range(1, UNHEALTHY_AFTER + 1):
            await crash_all()
            assert supervisor.crashed(version.id)
            supervisor.end_tick()
            assert not supervisor.crashed(version.id)
            supervisor._not_before[version.id] = 0  # skip the back-off's wait
            if crash < UNHEALTHY_AFTER:
                assert world.fresh(version).health == "ok"
            await supervisor.converge(model, version)
        assert world.fresh(version).health == "unhealthy"
        assert "Crashed 3 times in a row" in world.fresh(version).health_log
        await supervisor.record_outcomes()  # the restarted instances are ready: healthy again
        assert world.fresh(version).health == "ok"

    asyncio.run(scenario())


def test_after_a_second_crash_the_next_start_waits(world: World) -> None:
    version = world.version(status="ready")
    supervisor = world.supervisor

    async def scenario() -> None:
        await supervisor.converge(world.model, version)
        for _ in range(2):
            for instance in world.backend.instances():
                instance.state = InstanceState.EXITED
            await supervisor.record_outcomes()
            await supervisor.converge(world.model, version)
        # the first crash restarts at once, the second waits: nothing started this time
        assert world.backend.instances() == []

    asyncio.run(scenario())


def test_a_version_that_cannot_start_fails_its_build_and_waits_before_trying_again(
    world: World,
) -> None:
    version = world.version()
    shutil.rmtree(world.supervisor.children.instance_workdir(version.id))  # and no bundle

    asyncio.run(world.supervisor.converge(world.model, version))
    failed = world.fresh(version)
    assert failed.status == "failed"
    assert "Could not start an instance" in failed.build_log
    assert failed.failure is not None
    assert failed.failure.kind == "start"
    assert failed.failure.message.startswith("Could not start an instance: ")
    assert world.supervisor._not_before[version.id] > 0


def test_a_stopped_instance_leaves_rotation_at_once_and_stops_after_its_calls(
    world: World,
) -> None:
    version = world.version(status="ready")
    supervisor = world.supervisor

    async def scenario() -> None:
        await supervisor.converge(world.model, version)
        instance = world.backend.started[0]
        supervisor.stop(instance)
        pool = supervisor.router.pool(version.id)
        assert pool is not None
        assert instance not in pool.instances()
        assert instance not in supervisor.live(version.id)
        await asyncio.sleep(0)  # the stop runs as a task
        await asyncio.sleep(0)
        assert instance in world.backend.stopped

    asyncio.run(scenario())


def test_stray_instances_of_unwanted_versions_are_stopped(world: World) -> None:
    wanted, stray = world.version(status="ready"), world.version(status="ready")
    supervisor = world.supervisor

    async def scenario() -> None:
        await supervisor.converge(world.model, wanted)
        await supervisor.converge(world.model, stray)
        supervisor.stop_strays({wanted.id})
        assert supervisor.live(stray.id) == []
        assert len(supervisor.live(wanted.id)) == 2

    asyncio.run(scenario())


def test_an_instance_over_the_memory_limit_is_ended_for_memory(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = world.version(status="ready")
    asyncio.run(world.supervisor.converge(world.model, version))
    big, small = world.backend.started
    monkeypatch.setattr(big, "memory_mb", lambda: 150.0)
    monkeypatch.setattr(small, "memory_mb", lambda: 50.0)
    world.supervisor.check_memory()
    assert big.ended_by == "memory"
    assert "over the limit of 100 MB" in big.log_lines[-1]
    assert small.ended_by is None


def test_an_instance_is_ended_by_its_id(world: World) -> None:
    version = world.version(status="ready")
    asyncio.run(world.supervisor.converge(world.model, version))
    first: FakeInstance = world.backend.started[0]
    world.supervisor.end_instance(first.spec.instance_id, "timeout", "a call timed out")
    assert first.ended_by == "timeout"
    assert world.backend.started[1].ended_by is None


@pytest.mark.parametrize(("quota", "polls"), [(None, 500), (2.0, 0)])
def test_instances_poll_for_their_next_call_unless_the_servers_cgroup_has_a_cpu_quota(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    quota: float | None,
    polls: int,
) -> None:
    # The quota of the server's own cgroup is read from /proc and the cgroup file system
    # (tests/backends/test_cpu_limit.py reads a real one); here, what the supervisor makes of it.
    monkeypatch.setattr(cpu_limit, "own_quota", lambda: quota)
    settings = load_settings({"home": str(tmp_path / "home")}, environ={})
    backend = FakeBackend()
    with caplog.at_level("INFO", logger="modelhost.serving.supervisor"):
        app = create_app(settings, backend=backend)
    reconciler = app.services.reconciler
    assert isinstance(reconciler, Reconciler)
    repo = app.services.repo
    try:
        owner = repo.create_user("alice", is_admin=False)
        model = repo.create_model("calc", owner_id=owner.id, description="", instance_count=1)
        world = World(reconciler.supervisor, backend, repo, model)
        version = world.version(status="ready")
        asyncio.run(world.supervisor.converge(world.model, version))
        assert [i.spec.busy_poll_us for i in backend.started] == [polls]
        said = "this server's cgroup allows 2 CPUs, which polling for the next call would spend"
        assert (said in caplog.text) is (quota is not None)
    finally:
        repo.engine.dispose()
