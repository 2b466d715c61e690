"""The route table the gateway reads on every call: which version a route key sends a call to,
a canary's split by weight (docs/api.md, "Labels": a label sends a percentage of its calls to a
second version), and the release headers."""

from __future__ import annotations

import pytest

from modelhost.gateway import routes
from modelhost.gateway.routes import ModelRoute, Release, RouteTable

ROUTE = ModelRoute(
    "mid",
    "m",
    5.0,
    routes={"latest": ((3, 100),), "label/prod": ((2, 90), (3, 10)), "label/empty": ()},
)


def test_a_route_with_one_target_sends_every_call_there_and_an_unknown_one_nowhere() -> None:
    assert ROUTE.pick("latest") == 3
    assert ROUTE.pick("label/nope") is None
    assert ROUTE.pick("label/empty") is None


@pytest.mark.parametrize(
    ("point", "version"),
    [(0.0, 2), (45.0, 2), (90.0, 2), (90.5, 3), (99.9, 3), (100.0, 3)],
)
def test_a_canary_splits_calls_by_weight(
    monkeypatch: pytest.MonkeyPatch, point: float, version: int
) -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return point

    monkeypatch.setattr(routes.random, "uniform", uniform)
    assert ROUTE.pick("label/prod") == version
    assert drawn == [(0, 100)]  # a point in the sum of the weights


def test_a_canary_sends_about_its_share_of_calls() -> None:
    picks = [ROUTE.pick("label/prod") for _ in range(4000)]
    assert set(picks) == {2, 3}
    assert 0.05 < picks.count(3) / len(picks) < 0.15  # 10 %, far from the edges


def test_a_point_past_every_weight_goes_to_the_last_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes.random, "uniform", lambda low, high: high + 1e-9)
    assert ROUTE.pick("label/prod") == 3


def test_a_release_gives_its_number_as_the_version_header() -> None:
    assert Release("mid", "vid", 12, b"{}").number_header == b"12"


def test_the_table_finds_a_model_by_its_key() -> None:
    table = RouteTable({"m": ROUTE})
    assert table.find("m") is ROUTE
    assert table.find("other") is None
