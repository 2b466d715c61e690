"""The scheduler with a fake clock, on SQLite and on the real PostgreSQL server: when schedules
fire, overlap, missed ticks, pausing, time zones, runs a crashed server left behind, and runs
that wait for the version they published."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from modelhost import errors
from modelhost.app import create_app
from modelhost.db.repo import BuildFailure, Run, User, Version
from modelhost.jobs.runner import Jobs
from modelhost.jobs.scheduler import _fire, fire_due
from modelhost.operations import Services
from modelhost.operations import runs as run_ops
from modelhost.operations import schedules as ops
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    services: Services
    clock: Clock
    user: User


@pytest.fixture
def world(database_url: str, tmp_path: object) -> Iterator[World]:
    settings = load_settings(
        {"database_url": database_url},
        environ={
            "MODELHOST_HOME": str(tmp_path),
            "MODELHOST_SCHEDULE_MIN_INTERVAL_SECONDS": "1",
            # alice (no admin) schedules commands with no model in most of these tests
            "MODELHOST_CODE_RUNNERS": "users",
        },
    )
    clock = Clock(at("2026-12-02T12:00"))
    app = create_app(settings, backend=FakeBackend(), clock=clock)
    user = app.services.repo.create_user("alice", is_admin=False)
    yield World(app.services, clock, user)
    app.services.repo.engine.dispose()


def _archive() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    buffer.seek(0)
    return buffer


def _schedule(world: World, **when: str) -> str:
    schedule = ops.create_schedule(
        world.services, world.user, archive=_archive(), command=["python", "calc.py"], **when
    )
    return schedule.id


def _runs(world: World, schedule_id: str) -> list[tuple[str, dt.datetime]]:
    found = world.services.repo.list_runs(schedule_id=schedule_id)
    return [(r.status, r.created_at) for r in reversed(found)]


def test_a_schedule_fires_once_when_due_and_not_before(world: World) -> None:
    schedule_id = _schedule(world, every="10m")
    assert fire_due(world.services, at("2026-12-02T12:09:59")) == []
    fired = fire_due(world.services, at("2026-12-02T12:10:00"))
    assert [(r.schedule_id, r.status) for r in fired] == [(schedule_id, "queued")]
    assert fire_due(world.services, at("2026-12-02T12:10:01")) == []
    schedule = world.services.repo.get_schedule(schedule_id)
    assert schedule is not None
    assert schedule.next_run_at == at("2026-12-02T12:20")


def test_a_tick_that_finds_the_previous_run_still_going_records_a_skipped_run(
    world: World,
) -> None:
    schedule_id = _schedule(world, every="10m")
    (first,) = fire_due(world.services, at("2026-12-02T12:10"))
    assert world.services.repo.start_run(first.id)  # it is still running at the next tick
    (second,) = fire_due(world.services, at("2026-12-02T12:20"))
    assert second.status == "skipped"
    assert first.id in second.message
    assert "still running" in second.message
    world.services.repo.finish_run(first.id, "succeeded", "done", 0)
    (third,) = fire_due(world.services, at("2026-12-02T12:30"))
    assert third.status == "queued"
    assert [status for status, _ in _runs(world, schedule_id)] == [
        "succeeded",
        "skipped",
        "queued",
    ]


def test_ticks_missed_while_the_server_was_down_fire_once_at_start_up(world: World) -> None:
    schedule_id = _schedule(world, every="10m")
    # The server was down from 12:05 to 13:07: six ticks passed, one run comes out.
    fired = fire_due(world.services, at("2026-12-02T13:07"))
    assert len(fired) == 1
    assert fire_due(world.services, at("2026-12-02T13:08")) == []
    schedule = world.services.repo.get_schedule(schedule_id)
    assert schedule is not None
    assert schedule.next_run_at == at("2026-12-02T13:10")  # the rhythm is kept


def test_two_ticks_that_read_the_same_due_schedule_fire_it_once(world: World) -> None:
    _schedule(world, every="10m")
    now = at("2026-12-02T12:10")
    (stale,) = world.services.repo.due_schedules(now)
    assert _fire(world.services, stale, now) is not None
    assert _fire(world.services, stale, now) is None


def test_a_paused_schedule_does_not_fire_and_resuming_skips_the_paused_ticks(
    world: World,
) -> None:
    schedule_id = _schedule(world, every="10m")
    ops.pause(world.services, world.user, schedule_id)
    assert fire_due(world.services, at("2026-12-02T15:00")) == []
    world.clock.now = at("2026-12-02T15:03")
    resumed = ops.resume(world.services, world.user, schedule_id)
    assert resumed.next_run_at == at("2026-12-02T15:13")
    assert fire_due(world.services, at("2026-12-02T15:12")) == []
    assert len(fire_due(world.services, at("2026-12-02T15:13"))) == 1
    events = [e.action for e in world.services.repo.audit_events()]
    assert {"schedule-create", "schedule-pause", "schedule-resume"} <= set(events)


def test_a_nightly_berlin_schedule_fires_at_two_local_time_across_a_dst_change(
    world: World,
) -> None:
    world.clock.now = at("2026-03-27T12:00")
    schedule_id = _schedule(world, cron="0 2 * * *", timezone="Europe/Berlin")
    for moment in ("2026-03-28T00:59", "2026-03-28T01:00", "2026-03-29T00:59", "2026-03-29T01:00"):
        fire_due(world.services, at(moment))  # the night before (CET), then the change
    for moment in ("2026-03-29T23:59", "2026-03-30T00:00", "2026-03-30T01:00"):
        fire_due(world.services, at(moment))  # the night after (CEST)
    fired = [created for _, created in _runs(world, schedule_id)]
    assert fired == [at("2026-03-28T01:00"), at("2026-03-29T01:00"), at("2026-03-30T00:00")]


def _published_run(world: World, function: str = "add") -> tuple[Run, Version]:
    """A run of alice's on her model 'trained' that exited 0 and published version 2, which is
    building; the server that ran it then crashed (or has just finished its command)."""
    repo = world.services.repo
    model = repo.create_model("trained", owner_id=world.user.id, description="", instance_count=1)
    values = {"bundle_sha256": "0" * 64, "bundle_bytes": 32, "bundle_files": 1}
    values |= {"file": "calc.py", "environment": "server", "description": ""}
    repo.create_version(model.id, **values, function="add", author_id=world.user.id)
    version = repo.create_version(model.id, **values, function=function, author_id=world.user.id)
    run = repo.create_run(
        owner_id=world.user.id,
        model_id=model.id,
        file="calc.py",
        function=function,
        command='["python", "train.py"]',
        bundle_sha256="0" * 64,
        timeout_seconds=60.0,
    )
    assert repo.start_run(run.id)
    assert repo.record_publish(run.id, version.id, version.number)
    return run, version


def _leader(world: World) -> Jobs:
    """The run loop of the server that leads (on PostgreSQL, leading takes a lease)."""
    return Jobs(dataclasses.replace(world.services, leading=lambda: True))


def _run(world: World, run_id: str) -> Run:
    found = world.services.repo.get_run(run_id)
    assert found is not None
    return found


def test_runs_a_crashed_server_left_running_fail_and_never_publish_again(world: World) -> None:
    repo = world.services.repo
    plain = repo.create_run(
        owner_id=world.user.id,
        model_id=None,
        file=None,
        function=None,
        command='["python", "train.py"]',
        bundle_sha256="0" * 64,
        timeout_seconds=60.0,
    )
    assert repo.start_run(plain.id)
    published, _version = _published_run(world)
    assert {r.id for r in Jobs(world.services).recover()} == {plain.id}
    after = _run(world, plain.id)
    assert after.status == "failed"
    assert "Interrupted" in after.message
    assert _run(world, published.id).status == "running"  # its version decides, not the crash
    assert not repo.record_publish(published.id, "w" * 24, 8)  # a second publish is refused
    assert not repo.record_publish(plain.id, "x" * 24, 9)  # and a first one after the outcome
    assert not repo.finish_run(plain.id, "succeeded", "late")  # the outcome stays


def test_a_run_whose_version_fails_to_load_fails_with_the_versions_failure_once_known(
    world: World,
) -> None:
    repo = world.services.repo
    run, version = _published_run(world, function="nofunc")
    jobs = _leader(world)

    asyncio.run(jobs.tick())

    loading = run_ops.run_view(world.services, _run(world, run.id))
    assert (loading["status"], loading["exit_code"]) == ("running", 0)
    assert loading["message"] == (
        "Exited with status 0; published version 2 (calc.py:nofunc), which is loading; the run "
        "ends once it has loaded or failed to."
    )
    failure = BuildFailure("load", "'calc.py' has no function named 'nofunc'.")
    assert repo.finish_build(version.id, status="failed", log="Failed:\n", failure=failure)

    asyncio.run(jobs.tick())

    failed = _run(world, run.id)
    assert (failed.status, failed.exit_code) == ("failed", 0)
    assert failed.message == (
        "Exited with status 0; published version 2 (calc.py:nofunc), which failed to load: "
        "'calc.py' has no function named 'nofunc'. 'modelhost versions trained --number 2' "
        "shows its build log."
    )
    assert run_ops.run_view(world.services, failed)["message"] == failed.message


def test_a_run_that_a_crashed_server_left_after_it_published_succeeds_once_its_version_loads(
    world: World,
) -> None:
    run, version = _published_run(world)
    jobs = _leader(world)
    asyncio.run(jobs.tick())  # recovers first: the run is not interrupted
    assert _run(world, run.id).status == "running"
    assert world.services.repo.finish_build(version.id, status="ready", log="Ready.\n")

    asyncio.run(jobs.tick())

    done = _run(world, run.id)
    assert (done.status, done.exit_code) == ("succeeded", 0)
    assert done.message == (
        "Exited with status 0; published version 2 (calc.py:add), which has loaded."
    )


def test_a_run_whose_version_was_deleted_before_it_loaded_fails_saying_so(world: World) -> None:
    run, _version = _published_run(world)
    assert run.model_id is not None
    world.services.repo.delete_model(run.model_id)

    asyncio.run(_leader(world).tick())

    gone = _run(world, run.id)
    assert gone.status == "failed"
    assert gone.message.endswith(
        "published version 2 (calc.py:add), which was deleted before it loaded."
    )


def test_a_run_waiting_for_its_version_cannot_be_cancelled_and_says_why(world: World) -> None:
    run, _version = _published_run(world)
    with pytest.raises(errors.Conflict, match="published version 2, which is loading"):
        run_ops.cancel_run(world.services, world.user, run.id)
    assert not _run(world, run.id).cancel_requested


def test_a_followers_run_loop_fires_nothing_and_leaves_running_runs_alone_until_it_leads(
    world: World,
) -> None:
    # Several servers on one database: only the leader fires schedules, starts runs and
    # fails the runs the previous leader left running (docs/scaling.md).
    repo = world.services.repo
    schedule_id = _schedule(world, every="10m")
    elsewhere = repo.create_run(
        owner_id=world.user.id,
        model_id=None,
        file=None,
        function=None,
        command='["python", "train.py"]',
        bundle_sha256="0" * 64,
        timeout_seconds=60.0,
    )
    assert repo.start_run(elsewhere.id)  # the leader runs it
    leading = [False]
    follower = Jobs(dataclasses.replace(world.services, leading=lambda: leading[0]))
    world.clock.now = at("2026-12-02T12:10")

    asyncio.run(follower.tick())

    assert _runs(world, schedule_id) == []
    again = repo.get_run(elsewhere.id)
    assert again is not None
    assert again.status == "running"

    leading[0] = True  # the leader died: this server leads now
    asyncio.run(follower.tick())
    asyncio.run(follower.close())
    assert len(_runs(world, schedule_id)) == 1
    again = repo.get_run(elsewhere.id)
    assert again is not None
    assert again.status == "failed"
    assert "Interrupted" in again.message


# --------------------------------------------------------------------------- acting as creator


def _model_schedule(world: World, role: str) -> tuple[str, str]:
    """A model owned by ``bob`` where alice has ``role``, and alice's schedule publishing to it;
    returns (schedule id, model id)."""
    repo = world.services.repo
    bob = repo.create_user("bob", is_admin=False)
    model = repo.create_model("nightly", owner_id=bob.id, description="", instance_count=1)
    repo.set_collaborator(model.id, world.user.id, role)
    schedule = ops.create_schedule(
        world.services,
        world.user,
        archive=_archive(),
        command=["python", "calc.py"],
        every="10m",
        model="nightly",
        file="calc.py",
        function="add",
    )
    return schedule.id, model.id


def _denied_tick(world: World, schedule_id: str, when: str) -> str:
    """Fire at ``when``; the tick must be recorded denied, the schedule paused and audited.
    Returns the denied run's message."""
    (fired,) = fire_due(world.services, at(when))
    assert fired.status == "denied"
    schedule = world.services.repo.get_schedule(schedule_id)
    assert schedule is not None
    assert schedule.paused
    events = [e for e in world.services.repo.audit_events() if e.action == "schedule-denied"]
    assert [(e.outcome, e.actor) for e in events] == [("denied", "modelhost")]
    assert fire_due(world.services, at("2026-12-02T18:00")) == []  # paused: no more ticks
    return fired.message


def test_a_schedule_whose_creator_lost_the_editor_role_is_denied_paused_and_audited(
    world: World,
) -> None:
    schedule_id, model_id = _model_schedule(world, "editor")
    (first,) = fire_due(world.services, at("2026-12-02T12:10"))
    assert first.status == "queued"
    world.services.repo.finish_run(first.id, "succeeded", "done", 0)
    world.services.repo.set_collaborator(model_id, world.user.id, "viewer")
    message = _denied_tick(world, schedule_id, "2026-12-02T12:20")
    assert "alice" in message
    assert "take-over" in message


def test_a_schedule_whose_creator_was_removed_from_the_model_is_denied(world: World) -> None:
    schedule_id, model_id = _model_schedule(world, "editor")
    assert world.services.repo.remove_collaborator(model_id, world.user.id)
    _denied_tick(world, schedule_id, "2026-12-02T12:10")


def test_a_schedule_whose_creator_was_disabled_is_denied(world: World) -> None:
    schedule_id = _schedule(world, every="10m")
    world.services.repo.update_user(world.user.id, disabled_at=at("2026-12-02T12:05"))
    assert "disabled" in _denied_tick(world, schedule_id, "2026-12-02T12:10")


def test_a_model_less_schedule_is_denied_once_only_admins_may_run_code_with_no_model(
    world: World,
) -> None:
    _schedule(world, every="10m")
    strict = world.services.settings.replace(code_runners="admins")
    services = dataclasses.replace(world.services, settings=strict)
    (fired,) = fire_due(services, at("2026-12-02T12:10"))
    assert fired.status == "denied"
    assert "code_runners" in fired.message


def test_a_queued_run_whose_creator_lost_the_role_before_it_started_is_denied_unrun(
    world: World, tmp_path: object
) -> None:
    schedule_id, model_id = _model_schedule(world, "editor")
    (queued,) = fire_due(world.services, at("2026-12-02T12:10"))
    world.services.repo.set_collaborator(model_id, world.user.id, "viewer")

    with open(f"{tmp_path}/run.log", "w+b") as log:
        status, message, code = asyncio.run(Jobs(world.services)._run(queued, log))
        log.seek(0)
        assert log.read() == b""  # nothing ran, nothing was prepared for it

    assert (status, code) == ("denied", None)
    assert "alice" in message
    assert "take-over" in message
    schedule = world.services.repo.get_schedule(schedule_id)
    assert schedule is not None
    assert schedule.paused
    events = [e for e in world.services.repo.audit_events() if e.action == "schedule-denied"]
    assert [(e.outcome, e.actor) for e in events] == [("denied", "modelhost")]


def test_the_models_owner_takes_a_denied_schedule_over_and_it_runs_as_them(
    world: World,
) -> None:
    schedule_id, model_id = _model_schedule(world, "editor")
    world.services.repo.remove_collaborator(model_id, world.user.id)
    _denied_tick(world, schedule_id, "2026-12-02T12:10")
    bob = world.services.repo.find_user("bob")
    assert bob is not None
    taken = ops.take_over(world.services, bob, schedule_id)
    assert taken.owner_id == bob.id
    assert taken.paused
    world.clock.now = at("2026-12-02T19:00")
    ops.resume(world.services, bob, schedule_id)
    (fired,) = fire_due(world.services, at("2026-12-02T19:10"))
    assert (fired.status, fired.owner_id) == ("queued", bob.id)
    actions = [e.action for e in world.services.repo.audit_events()]
    assert "schedule-take-over" in actions


def test_an_editor_may_not_take_over_a_schedule_but_only_the_owner_or_an_admin(
    world: World,
) -> None:
    schedule_id, model_id = _model_schedule(world, "editor")
    carol = world.services.repo.create_user("carol", is_admin=False)
    world.services.repo.set_collaborator(model_id, carol.id, "editor")
    with pytest.raises(errors.Forbidden):
        ops.take_over(world.services, carol, schedule_id)
    admin = world.services.repo.create_user("root", is_admin=True)
    assert ops.take_over(world.services, admin, schedule_id).owner_id == admin.id
