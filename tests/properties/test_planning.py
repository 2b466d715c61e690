"""Property tests of ``plan()`` against the rules docs/architecture.md states for effective
routes ("a switch waits for readiness") and for what runs, over generated models: versions in
every status, stopped and started versions, labels with canaries, previous routes and
readiness."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from modelhost.db.repo import Label, Model, Version
from modelhost.planning import LATEST, Targets, label_route, plan
from tests.test_planning import _version

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)


Case = tuple[Model, list[Version], list[Label], dict[str, Targets], set[int]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(min_value=1, max_value=5))
    versions = [
        _version(
            n,
            draw(st.sampled_from(["ready", "ready", "building", "failed"])),
            draw(st.sampled_from([None, None, "running", "stopped"])),
        )
        for n in range(1, count + 1)
    ]
    model = Model(
        id="m",
        name="m",
        description="",
        owner_id="u",
        instance_count=1,
        timeout_seconds=None,
        created_at=NOW,
        updated_at=NOW,
        routing_mode=draw(st.sampled_from(["basic", "advanced"])),
        deployed_version=draw(st.none() | st.integers(min_value=1, max_value=count)),
        state=draw(st.sampled_from(["running", "running", "stopped"])),
    )
    # Only a built version can be labelled (it may fail or be stopped later).
    built = [v.number for v in versions if v.status != "building"]
    labels = []
    for name in draw(st.sets(st.sampled_from(["prod", "beta"]))) if built else ():
        canary = draw(st.none() | st.sampled_from(built))
        labels.append(
            Label(
                "m",
                name,
                draw(st.sampled_from(built)),
                canary,
                draw(st.integers(min_value=1, max_value=100)) if canary else 0,
                NOW,
            )
        )
    keys = [LATEST, label_route("prod"), label_route("beta")]
    previous: dict[str, Targets] = {}
    for key in draw(st.sets(st.sampled_from(keys))):
        previous[key] = ((draw(st.integers(min_value=1, max_value=count)), 100),)
    fully_ready = draw(st.sets(st.integers(min_value=1, max_value=count)))
    return model, versions, labels, previous, fully_ready


@given(cases())
def test_plan_follows_the_documented_rules_for_routes_and_running_versions(
    case: Case,
) -> None:
    model, versions, labels, previous, fully_ready = case
    by_number = {v.number: v for v in versions}
    # "fully ready" only ever holds for versions that are built
    ready_now = {n for n in fully_ready if by_number[n].status == "ready"}
    result = plan(model, versions, labels, previous, ready_now.__contains__)

    building = {v.number for v in versions if v.status == "building"}
    assert result.build == building  # every building version builds, running or not
    if model.state != "running":
        assert result.run == frozenset()
        assert result.routes == {}
        return

    servable = {v.number for v in versions if v.status == "ready" and v.desired_state != "stopped"}
    failed = {v.number for v in versions if v.status == "failed"}
    stopped = {v.number for v in versions if v.desired_state == "stopped"}
    for key, targets in result.routes.items():
        numbers = {n for n, _ in targets}
        # Weights are percentages that add up to 100, each one positive.
        assert sum(w for _, w in targets) == 100
        assert all(w > 0 for _, w in targets)
        before = previous.get(key)
        if before is not None and targets == before:
            continue  # kept: checked below from the desired side
        # The route moved (or is new): nothing to keep, or a previous target that can no
        # longer serve, or each new target fully ready or stopped on purpose.
        moved_at_once = (
            before is None
            or not all(n in servable for n, _ in before)
            or all(n in ready_now or (n in stopped and n not in failed) for n in numbers)
        )
        assert moved_at_once, (key, before, targets)
        # A failed version replaces nothing that still serves.
        if numbers & failed and before is not None:
            assert not all(n in servable for n, _ in before)

    # What runs: every servable target of a route, every version started on purpose, and
    # never a version that is not built or is stopped.
    assert result.run <= servable
    for targets in result.routes.values():
        assert {n for n, _ in targets} & servable <= result.run
    assert {v.number for v in versions if v.desired_state == "running"} & servable <= result.run


@given(cases())
def test_a_route_whose_desired_versions_are_all_fully_ready_points_at_them(
    case: Case,
) -> None:
    model, versions, labels, previous, _ = case
    everything_ready = {v.number for v in versions if v.status == "ready"}
    result = plan(model, versions, labels, previous, everything_ready.__contains__)
    if model.state != "running":
        return
    for label in labels:
        targets = result.routes[label_route(label.name)]
        if by_status(versions, label.version) == "ready" and (
            label.canary_version is None or by_status(versions, label.canary_version) == "ready"
        ):
            expected = {label.version}
            if label.canary_version is not None and label.canary_weight < 100:
                expected.add(label.canary_version)
            if label.canary_version is not None and label.canary_weight == 100:
                expected = {label.canary_version}
            assert {n for n, _ in targets} == expected


def by_status(versions: list[Version], number: int) -> str:
    return next(v.status for v in versions if v.number == number)
