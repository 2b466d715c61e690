"""What should run and where each route points: pure functions the reconciler applies.

Desired routes come from the model's routing mode, its deployed version and its labels. The
*effective* route only moves to a new target once that target is fully ready, so a switch
never sends traffic to a version that cannot take it; until then the previous target keeps
serving and keeps running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from modelhost.db.repo import Label, Model, Version

LATEST = "latest"
LABEL_PREFIX = "label/"
PROMOTED = "prod"

#: A route's targets: (version number, weight in percent).
Targets = tuple[tuple[int, int], ...]


def label_route(name: str) -> str:
    return LABEL_PREFIX + name


@dataclass(frozen=True)
class Plan:
    """For one model: versions to run, versions to build, and each route's effective targets."""

    run: frozenset[int] = frozenset()
    build: frozenset[int] = frozenset()
    routes: dict[str, Targets] = field(default_factory=dict)


def latest_target(model: Model, ready: list[int]) -> int | None:
    """Basic routing serves the deployed version; advanced routing the newest ready one."""
    if not ready:
        return None
    if model.routing_mode == "basic" and model.deployed_version in ready:
        return model.deployed_version
    return max(ready)


def desired_routes(model: Model, ready: list[int], labels: Iterable[Label]) -> dict[str, Targets]:
    routes: dict[str, Targets] = {}
    latest = latest_target(model, ready)
    if latest is not None:
        routes[LATEST] = ((latest, 100),)
    for label in labels:
        targets: Targets = ((label.version, 100 - label.canary_weight),)
        if label.canary_version is not None and label.canary_weight > 0:
            targets += ((label.canary_version, label.canary_weight),)
        routes[label_route(label.name)] = tuple((n, w) for n, w in targets if w > 0)
    return routes


def plan(
    model: Model,
    versions: list[Version],
    labels: Iterable[Label],
    previous: dict[str, Targets],
    fully_ready: Callable[[int], bool],
) -> Plan:
    """Decide what runs and where routes point for ``model``.

    ``previous`` holds the routes in effect until now; ``fully_ready(n)`` says whether version
    ``n`` has all its instances ready (of the current generation).
    """
    build = frozenset(v.number for v in versions if v.status == "building")
    if model.state != "running":
        return Plan(build=build)
    ready = [v.number for v in versions if v.status == "ready"]
    failed = {v.number for v in versions if v.status == "failed"}
    stopped = {v.number for v in versions if v.desired_state == "stopped"}
    servable = set(ready) - stopped

    routes: dict[str, Targets] = {}
    wanted: set[int] = set()  # desired targets run too, so a pending switch can complete
    for key, desired in desired_routes(model, ready, labels).items():
        wanted |= {n for n, _ in desired}
        before = previous.get(key)
        # A failed version never replaces a route that still works; a stopped one does
        # (stopping is on purpose, and the route then answers 503 saying so).
        switch_done = all(
            fully_ready(n) or (n not in servable and n not in failed) for n, _ in desired
        )
        keep_before = (
            before is not None
            and before != desired
            and not switch_done
            and all(n in servable for n, _ in before)
        )
        routes[key] = before if keep_before and before is not None else desired

    run = wanted | {n for targets in routes.values() for n, _ in targets}
    run |= {v.number for v in versions if v.desired_state == "running"}
    return Plan(run=frozenset(run & servable), build=build, routes=routes)
