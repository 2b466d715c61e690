"""Planning is pure: routes move only to fully ready versions, and the targets keep running."""

from __future__ import annotations

import datetime as dt

from modelhost.db.repo import Label, Model, Version
from modelhost.planning import plan

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)


def _model(**changes: object) -> Model:
    values: dict[str, object] = {
        "id": "m",
        "name": "m",
        "description": "",
        "owner_id": "u",
        "instance_count": 1,
        "timeout_seconds": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Model(**{**values, **changes})  # type: ignore[arg-type]


def _version(number: int, status: str = "ready", desired: str | None = None) -> Version:
    return Version(
        id=f"v{number}",
        model_id="m",
        number=number,
        bundle_sha256="0" * 64,
        bundle_bytes=1,
        bundle_files=1,
        file="p.py",
        function="f",
        environment="server",
        status=status,
        build_log="",
        signature=None,
        description="",
        author_id="u",
        created_at=NOW,
        finished_at=None,
        desired_state=desired,
    )


def test_a_switch_waits_for_the_new_version_and_runs_both_meanwhile() -> None:
    model = _model(deployed_version=1)
    versions = [_version(1), _version(2)]
    before = {"latest": ((2, 100),)}
    pending = plan(model, versions, [], before, fully_ready=lambda n: n == 2)
    assert pending.routes["latest"] == ((2, 100),)
    assert pending.run == {1, 2}
    done = plan(model, versions, [], before, fully_ready=lambda n: True)
    assert done.routes["latest"] == ((1, 100),)
    assert done.run == {1}


def test_basic_routing_serves_the_deployed_version_and_advanced_the_newest() -> None:
    versions = [_version(1), _version(2), _version(3, "building")]
    basic = plan(_model(deployed_version=1), versions, [], {}, lambda n: True)
    advanced = plan(
        _model(routing_mode="advanced", deployed_version=1), versions, [], {}, lambda n: True
    )
    assert basic.routes["latest"] == ((1, 100),)
    assert advanced.routes["latest"] == ((2, 100),)
    assert basic.build == {3}


def test_a_canary_label_runs_both_versions_with_their_weights() -> None:
    label = Label("m", "prod", 1, 2, 25, NOW)
    result = plan(_model(), [_version(1), _version(2)], [label], {}, lambda n: True)
    assert result.routes["label/prod"] == ((1, 75), (2, 25))
    assert result.run == {1, 2}


def test_a_stopped_model_runs_nothing_but_still_builds() -> None:
    result = plan(
        _model(state="stopped"), [_version(1), _version(2, "building")], [], {}, lambda n: True
    )
    assert result.run == frozenset()
    assert result.build == {2}


def test_a_stopped_version_does_not_run_and_a_started_one_runs_off_route() -> None:
    versions = [_version(1, desired="running"), _version(2, desired="stopped")]
    result = plan(_model(deployed_version=2), versions, [], {}, lambda n: True)
    assert result.run == {1}
    assert result.routes["latest"] == ((2, 100),)


def test_a_canary_moves_a_label_only_once_both_of_its_versions_are_ready() -> None:
    # prod served version 1 alone; now 2 takes 25 %. Version 1 is ready, 2 is still starting.
    label = Label("m", "prod", 1, 2, 25, NOW)
    before = {"label/prod": ((1, 100),)}
    versions = [_version(1), _version(2)]
    pending = plan(_model(), versions, [label], before, fully_ready=lambda n: n == 1)
    assert pending.routes["label/prod"] == ((1, 100),)
    assert pending.run == {1, 2}
    done = plan(_model(), versions, [label], before, fully_ready=lambda n: True)
    assert done.routes["label/prod"] == ((1, 75), (2, 25))


def test_a_switch_moves_at_once_when_the_previous_target_can_no_longer_serve() -> None:
    # latest pointed at version 1, which was stopped: waiting for version 2 to be ready would
    # keep a route that answers nothing, so the route moves (and answers 503 until 2 is up).
    versions = [_version(1, desired="stopped"), _version(2)]
    before = {"latest": ((1, 100),)}
    result = plan(
        _model(routing_mode="advanced"), versions, [], before, fully_ready=lambda n: False
    )
    assert result.routes["latest"] == ((2, 100),)
    assert result.run == {2}


def test_a_failed_version_never_replaces_a_route_that_still_serves() -> None:
    versions = [_version(1), _version(2, "failed")]
    label = Label("m", "prod", 2, None, 0, NOW)
    before = {"label/prod": ((1, 100),)}
    result = plan(_model(), versions, [label], before, fully_ready=lambda n: n == 1)
    assert result.routes["label/prod"] == ((1, 100),)


def test_a_canary_at_full_weight_sends_every_call_to_the_canary() -> None:
    label = Label("m", "prod", 1, 2, 100, NOW)
    result = plan(_model(), [_version(1), _version(2)], [label], {}, lambda n: True)
    assert result.routes["label/prod"] == ((2, 100),)
    assert result.run == {2}  # version 1 gets no calls, so it need not run


def test_every_route_s_pending_target_runs_whatever_the_other_routes_want() -> None:
    # latest waits for version 2 (not ready yet); prod stays on version 1. Version 2 must run,
    # or the switch of latest never completes.
    model = _model(routing_mode="advanced")
    label = Label("m", "prod", 1, None, 0, NOW)
    before = {"latest": ((1, 100),), "label/prod": ((1, 100),)}
    result = plan(model, [_version(1), _version(2)], [label], before, lambda n: n == 1)
    assert result.routes["latest"] == ((1, 100),)
    assert result.run == {1, 2}
