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
