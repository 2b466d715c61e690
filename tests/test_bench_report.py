"""The benchmark's verdicts over rounds (bench/report.py): each figure that compares two
targets, or a target and the floor, is taken within a round, and the verdict is the median of
the rounds' figures (bench/README.md, "What one run measures")."""

from __future__ import annotations

from typing import Any

from bench.report import Report, Run, format_report, table_rows
from bench.wrk import WrkResult


def _result(rps: float, p50_ms: float = 1.0, p99_ms: float = 2.0, non_2xx: int = 0) -> WrkResult:
    return WrkResult(
        requests=int(rps * 5), rps=rps, p50_ms=p50_ms, p99_ms=p99_ms, non_2xx=non_2xx,
        socket_errors=0,
    )  # fmt: skip


def _floor(p50_ms: float) -> dict[str, Any]:
    return {"case": "x", "calls": 300, "result": 1, "p50_ms": p50_ms, "p99_ms": p50_ms * 2}


def _report(*runs: Run, **floors: float) -> Report:
    return Report(
        environment={},
        floors={case: _floor(p50) for case, p50 in floors.items()},
        runs=list(runs),
    )


def _check(report: Report, name: str) -> tuple[bool | None, str]:
    (check,) = [check for check in report.checks() if check.name == name]
    return check.passed, check.measured


def _add_at_32(ceiling: list[float], ours: list[float]) -> list[Run]:
    runs = []
    for round_, (theirs, mine) in enumerate(zip(ceiling, ours, strict=True), start=1):
        runs.append(Run("add", 32, "ceiling", _result(theirs), round=round_))
        runs.append(Run("add", 32, "modelhost", _result(mine), round=round_))
    return runs


def test_a_throughput_ratio_is_the_median_of_each_rounds_own_ratio() -> None:
    # Ratios by round: 0.70, 0.90, 0.75, median 0.75 (>= 0.75). The medians' ratio would be
    # 70 / 100 = 0.70: a machine twice as fast in round 3 must not count against modelhost.
    report = _report(*_add_at_32([100, 50, 200], [70, 45, 150]))

    passed, measured = _check(report, "lean_add_throughput")

    assert passed is True
    assert measured == "0.75x (rounds 0.70x, 0.90x, 0.75x)"
    assert report.ratio("add", 32) == 0.75


def test_a_throughput_ratio_below_the_target_in_most_rounds_fails() -> None:
    report = _report(*_add_at_32([100, 100, 100], [80, 70, 74]))

    assert _check(report, "lean_add_throughput")[0] is False
    assert _check(report, "add_throughput")[0] is True  # 0.74x >= 0.4x


def test_a_p50_is_compared_with_the_floor_measured_just_before_its_round() -> None:
    # Against the round's own floor: +0.3, +0.4, +0.2 ms, median +0.3 (<= 0.5). Against the
    # floor measured before the servers started (4.0 ms) it would be +0.7.
    report = _report(
        *(
            Run("rf_batch", 1, "modelhost", _result(200, p50_ms=p50), round=round_)
            for round_, p50 in enumerate([4.3, 5.4, 4.7], start=1)
        ),
        rf_batch=4.0,
    )
    report.round_floors["rf_batch"] = [[_floor(4.0)], [_floor(5.0)], [_floor(4.5)]]

    passed, measured = _check(report, "batch_latency")

    assert passed is True
    assert measured.startswith("floor + 0.30 ms (rounds +0.30, +0.40, +0.20)")


def test_a_p50_is_compared_with_the_mean_of_the_floors_just_before_and_after_its_run() -> None:
    # The machine slowed down in the middle of the round: floors 4.0 before the ceiling, 6.0
    # between it and modelhost, 6.4 after modelhost. modelhost's p50 (6.5) is compared with
    # (6.0 + 6.4) / 2 = 6.2 (+0.30, within 0.5), not with the round's first floor (+2.50).
    ceiling = Run("rf_batch", 1, "ceiling", _result(200, p50_ms=4.3), floor_p50_ms=5.0)
    ours = Run("rf_batch", 1, "modelhost", _result(150, p50_ms=6.5), floor_p50_ms=6.2)
    report = _report(ceiling, ours, rf_batch=4.0)
    report.round_floors["rf_batch"] = [[_floor(4.0), _floor(6.0), _floor(6.4)]]

    passed, measured = _check(report, "batch_latency")

    assert passed is True
    assert measured == "floor + 0.30 ms"
    assert report.over_floor(ceiling) == 4.3 - 5.0
    assert "round by round: p50 4.00, 6.00, 6.40 ms" in format_report(report)


def test_without_floors_by_round_the_floor_measured_before_the_servers_counts() -> None:
    report = _report(Run("rf", 1, "modelhost", _result(200, p50_ms=6.0)), rf=4.0)

    passed, measured = _check(report, "rf_latency")

    assert passed is False  # 6.0 = 4.0 + 2.0 > 4.0 + 1.5
    assert measured == "floor + 2.00 ms"


def test_a_p50_below_the_floor_reads_as_a_difference_below_it() -> None:
    report = _report(Run("rf", 1, "modelhost", _result(200, p50_ms=3.8)), rf=4.0)

    assert _check(report, "rf_latency") == (True, "floor - 0.20 ms")


def test_one_failed_round_fails_the_verdict_and_shows_in_the_table() -> None:
    runs = _add_at_32([100, 100], [90, 90])
    runs[3] = Run("add", 32, "modelhost", _result(90, non_2xx=3), round=2)
    report = _report(*runs)

    assert _check(report, "lean_add_throughput") == (False, "a run FAILED")
    assert report.passed() is False
    row = next(row for row in table_rows(report) if row[2] == "modelhost")
    assert row[-1].startswith("FAILED (non-2xx 3")


def test_the_table_shows_each_targets_median_and_its_paired_ratio() -> None:
    report = _report(*_add_at_32([100, 50, 200], [70, 45, 150]))

    rows = {row[2]: row for row in table_rows(report)}

    assert rows["ceiling"][3] == "100"  # median of 100, 50, 200
    assert rows["modelhost"][3] == "70"
    assert rows["modelhost"][6] == "0.75x"  # the median ratio, not 70 / 100
    assert "0.75x (rounds 0.70x, 0.90x, 0.75x)" in format_report(report)


def test_the_batching_verdict_says_what_no_server_can_pass_with_the_floors_forest() -> None:
    # 32 callers, each waiting at least one 16 ms forest per answer: at most 2,000 req/s.
    report = _report(
        Run("rf_batch", 32, "modelhost", _result(1_500, p99_ms=30.0), round=1),
        Run("rf_batch", 32, "modelhost", _result(1_300, p99_ms=40.0), round=2),
        rf_batch=16.0,
    )

    passed, measured = _check(report, "batch_throughput")

    assert passed is False
    assert measured.startswith("1,400 req/s, p99 35.00 ms (rounds 1,500, 1,300)")
    assert measured.endswith("no server passes 32 / the floor's p50 = 2,000 req/s here")
