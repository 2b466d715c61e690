"""The results of one run: the table, the targets (PASS/FAIL) and the JSON file.

The targets come from the issues (DESIGN.md §8 says where they live): modelhost must serve the
tiny function at 32 connections with at least 0.4x the ceiling's requests/s, and add at most
1.5 ms to the random forest's own median at 1 connection.

A run measures every (case, connections) in rounds: each round measures every target back to
back (and, at 1 connection, the floor between them: before the first, after each). A figure that
compares two targets is taken within each round; a target's p50 is compared with the floors
measured just before and just after it (their mean); a target's verdict is the median of its
rounds' figures: on a shared machine whose speed drifts by half within seconds, a pair measured
seconds apart says more than one measured minutes apart.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.wrk import WrkResult

ADD_RPS_RATIO_TARGET = 0.4
#: the ceiling with a process boundary (``bench/hop_ceiling.py``), measured with --hop-ceiling
HOP_CEILING = "hop ceiling"
RF_P50_BUDGET_MS = 1.5
#: issue 16: the forest behind a batching function, one row per request
BATCH_RPS_TARGET = 4000
BATCH_P99_BUDGET_MS = 50.0
BATCH_P50_BUDGET_MS = 0.5
PUBLISH_BUDGET_SECONDS = 2.0
#: issue 16, a leaner call path: add @1 p50 within this of the ceiling's, add @32 this ratio
LEAN_ADD_P50_BUDGET_MS = 0.1
LEAN_ADD_RPS_RATIO_TARGET = 0.75


@dataclass(frozen=True)
class Run:
    """One measured (case, connections, target) with wrk's result, or why there is none."""

    case: str
    connections: int
    target: str
    result: WrkResult | None
    error: str | None = None
    #: cores' worth of CPU used by processes outside the benchmark during the run
    other_cpu: float | None = None
    #: CPU milliseconds the target's processes (server, gateway processes, instances) spent
    #: per answered call: what bounds its requests/s once the cores are full, and far less
    #: noisy than requests/s on a shared machine
    cpu_ms_per_call: float | None = None
    #: which round of the (case, connections) it belongs to, from 1
    round: int = 1
    #: at 1 connection: the mean of the floor's p50s measured just before and just after it
    floor_p50_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    def status(self) -> str:
        if self.result is None:
            return f"FAILED ({self.error})"
        if not self.result.ok:
            return (
                f"FAILED (non-2xx {self.result.non_2xx}, socket errors "
                f"{self.result.socket_errors}, requests {self.result.requests})"
            )
        return "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "connections": self.connections,
            "target": self.target,
            "round": self.round,
            "ok": self.ok,
            "error": self.error,
            "other_cpu_cores": self.other_cpu,
            "cpu_ms_per_call": self.cpu_ms_per_call,
            "floor_p50_ms": self.floor_p50_ms,
            **(self.result.as_dict() if self.result else {}),
        }


@dataclass(frozen=True)
class Check:
    """One target: what it demands, what was measured, and whether it holds (None: not run)."""

    name: str
    demand: str
    measured: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIPPED"}[self.passed]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _signed(value: float) -> str:
    """A difference as the verdicts write it: "+ 0.30", "- 0.19"."""
    return f"{'-' if value < 0 else '+'} {abs(value):.2f}"


def _listed(values: list[float], form: Callable[[float], str]) -> str:
    """A verdict's figure per round, when there was more than one: "(rounds 0.71x, 0.80x)"."""
    return f" (rounds {', '.join(form(value) for value in values)})" if len(values) > 1 else ""


@dataclass
class Report:
    """Everything a run measured, plus the machine it ran on."""

    environment: dict[str, Any]
    #: per case, the function alone over many calls, before any server started
    floors: dict[str, dict[str, Any]]
    runs: list[Run] = field(default_factory=list)
    #: per case, the floor measured again at 1 connection, by round: before each round's first
    #: target and after each (older runs: once, just before the round)
    round_floors: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)
    #: per batching case, the batches modelhost sent its instances by size ("<=8": count)
    batch_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: seconds from publishing the add project to its first 200, per round
    publish_seconds: list[float] = field(default_factory=list)

    def rounds(self, case: str, connections: int, target: str) -> list[Run]:
        """``target``'s runs of one (case, connections), by round."""
        found = [
            run
            for run in self.runs
            if (run.case, run.connections, run.target) == (case, connections, target)
        ]
        return sorted(found, key=lambda run: run.round)

    def _paired(
        self, case: str, connections: int, target: str, other: str
    ) -> list[tuple[WrkResult, WrkResult]] | None:
        """``target``'s and ``other``'s results round by round; None if either has a failed
        run (or none)."""
        ours, theirs = self.rounds(case, connections, target), self.rounds(case, connections, other)
        if not ours or not theirs or not all(run.ok for run in (*ours, *theirs)):
            return None
        by_round = {run.round: run.result for run in theirs if run.result is not None}
        pairs = [
            (run.result, by_round[run.round])
            for run in ours
            if run.result is not None and run.round in by_round
        ]
        return pairs or None

    def ratios(self, case: str, connections: int, target: str = "modelhost") -> list[float]:
        """``target``'s requests/s over the ceiling's, round by round (empty: a run failed)."""
        pairs = self._paired(case, connections, target, "ceiling")
        return [ours.rps / ceiling.rps for ours, ceiling in pairs or ()]

    def ratio(self, case: str, connections: int, target: str = "modelhost") -> float | None:
        """The median of :meth:`ratios`."""
        return _median(self.ratios(case, connections, target))

    def floor_of(self, run: Run) -> float | None:
        """The floor p50 ``run`` is compared with: the mean of those measured just before and
        just after it, else the first of its round, else the one before the servers started."""
        if run.floor_p50_ms is not None:
            return run.floor_p50_ms
        again = self.round_floors.get(run.case, [])
        if 0 < run.round <= len(again) and again[run.round - 1]:
            return float(again[run.round - 1][0]["p50_ms"])
        floor = self.floors.get(run.case)
        return None if floor is None else float(floor["p50_ms"])

    def over_floor(self, run: Run) -> float | None:
        """p50 minus the function's own in-process p50 (1-connection runs only)."""
        floor = self.floor_of(run)
        if run.connections != 1 or floor is None or not run.ok or run.result is None:
            return None
        return run.result.p50_ms - floor

    def overs_floor(self, case: str, target: str = "modelhost") -> list[float]:
        """:meth:`over_floor` of ``target``'s 1-connection runs, by round (empty: one failed)."""
        overs = [self.over_floor(run) for run in self.rounds(case, 1, target)]
        return [] if None in overs else [over for over in overs if over is not None]

    def summary(self, case: str, connections: int, target: str) -> Run | None:
        """One run standing for all of ``target``'s rounds: the median of each figure, and
        the most CPU others used; the first failed round if one failed."""
        runs = self.rounds(case, connections, target)
        if not runs:
            return None
        failed = [run for run in runs if not run.ok]
        if failed:
            return failed[0]
        results = [run.result for run in runs if run.result is not None]

        def middle(values: list[float | None]) -> float | None:
            return _median([value for value in values if value is not None])

        others = [run.other_cpu for run in runs if run.other_cpu is not None]
        return Run(
            case,
            connections,
            target,
            WrkResult(
                requests=sum(result.requests for result in results),
                rps=statistics.median(result.rps for result in results),
                p50_ms=statistics.median(result.p50_ms for result in results),
                p99_ms=statistics.median(result.p99_ms for result in results),
                non_2xx=0,
                socket_errors=0,
            ),
            other_cpu=max(others) if others else None,
            cpu_ms_per_call=middle([run.cpu_ms_per_call for run in runs]),
            round=0,
        )

    def checks(self) -> list[Check]:
        return [
            self._check_add_throughput(),
            self._check_lean_latency(),
            self._check_lean_throughput(),
            self._check_rf_latency(),
            self._check_batch_throughput(),
            self._check_batch_latency(),
            self._check_publish(),
        ]

    def _check_publish(self) -> Check:
        demand = f"publish add to its first 200: every round < {PUBLISH_BUDGET_SECONDS:g} s"
        if not self.publish_seconds:
            return Check("publish_to_serving", demand, "not run", None)
        measured = ", ".join(f"{seconds:.2f} s" for seconds in self.publish_seconds)
        return Check(
            "publish_to_serving",
            demand,
            measured,
            max(self.publish_seconds) < PUBLISH_BUDGET_SECONDS,
        )

    def _check_batch_throughput(self) -> Check:
        demand = (
            f"rf_batch @32: modelhost req/s >= {BATCH_RPS_TARGET:,} (about 10x the ceiling's rf) "
            f"with p99 <= {BATCH_P99_BUDGET_MS:g} ms"
        )
        ours = self.summary("rf_batch", 32, "modelhost")
        if ours is None:
            return Check("batch_throughput", demand, "not run", None)
        if ours.result is None or not ours.ok:
            return Check("batch_throughput", demand, "the run FAILED", False)
        ceiling = self.summary("rf", 32, "ceiling") or self.summary("rf_batch", 32, "ceiling")
        times = (
            f", {ours.result.rps / ceiling.result.rps:.1f}x the ceiling's rf"
            if ceiling is not None and ceiling.result is not None and ceiling.ok
            else ""
        )
        measured = f"{ours.result.rps:,.0f} req/s, p99 {ours.result.p99_ms:.2f} ms{times}"
        measured += _listed(
            [run.result.rps for run in self.rounds("rf_batch", 32, "modelhost") if run.result],
            lambda rps: f"{rps:,.0f}",
        )
        floor = self.floors.get("rf_batch")
        if floor is not None and float(floor["p50_ms"]) > 0:
            # Little's law: 32 callers, each waiting at least one forest for each answer.
            bound = 32 * 1000 / float(floor["p50_ms"])
            measured += f"; no server passes 32 / the floor's p50 = {bound:,.0f} req/s here"
        passed = ours.result.rps >= BATCH_RPS_TARGET and ours.result.p99_ms <= BATCH_P99_BUDGET_MS
        return Check("batch_throughput", demand, measured, passed)

    def _check_over_floor(self, case: str, name: str, budget: float) -> Check:
        demand = f"{case} @1: modelhost p50 <= floor p50 + {budget:g} ms"
        if not self.rounds(case, 1, "modelhost") or case not in self.floors:
            return Check(name, demand, "not run", None)
        overs = self.overs_floor(case)
        over = _median(overs)
        if over is None:
            return Check(name, demand, "the run FAILED", False)
        measured = f"floor {_signed(over)} ms" + _listed(overs, lambda value: f"{value:+.2f}")
        hop = _median(self.overs_floor(case, HOP_CEILING))
        if hop is not None:
            measured += f" (hop ceiling {_signed(hop)} ms)"
        return Check(name, demand, measured, over <= budget)

    def _check_batch_latency(self) -> Check:
        return self._check_over_floor("rf_batch", "batch_latency", BATCH_P50_BUDGET_MS)

    def _check_rf_latency(self) -> Check:
        return self._check_over_floor("rf", "rf_latency", RF_P50_BUDGET_MS)

    def _check_add_throughput(self) -> Check:
        demand = f"add @32: modelhost req/s >= {ADD_RPS_RATIO_TARGET}x the ceiling's"
        if not self.rounds("add", 32, "modelhost") or not self.rounds("add", 32, "ceiling"):
            return Check("add_throughput", demand, "not run", None)
        ratios = self.ratios("add", 32)
        ratio = _median(ratios)
        if ratio is None:
            return Check("add_throughput", demand, "a run FAILED", False)
        measured = f"{ratio:.2f}x" + _listed(ratios, lambda value: f"{value:.2f}x")
        return Check("add_throughput", demand, measured, ratio >= ADD_RPS_RATIO_TARGET)

    def _check_lean_latency(self) -> Check:
        demand = f"add @1: modelhost p50 <= the ceiling's p50 + {LEAN_ADD_P50_BUDGET_MS} ms"
        if not self.rounds("add", 1, "modelhost") or not self.rounds("add", 1, "ceiling"):
            return Check("lean_add_latency", demand, "not run", None)
        pairs = self._paired("add", 1, "modelhost", "ceiling")
        if pairs is None:
            return Check("lean_add_latency", demand, "a run FAILED", False)
        overs = [ours.p50_ms - ceiling.p50_ms for ours, ceiling in pairs]
        over = statistics.median(overs)
        measured = f"ceiling {_signed(over)} ms" + _listed(overs, lambda value: f"{value:+.2f}")
        hop = self._paired("add", 1, HOP_CEILING, "ceiling")
        if hop is not None:
            hop_over = statistics.median(ours.p50_ms - ceiling.p50_ms for ours, ceiling in hop)
            measured += f" (hop ceiling {_signed(hop_over)} ms)"
        return Check("lean_add_latency", demand, measured, over <= LEAN_ADD_P50_BUDGET_MS)

    def _check_lean_throughput(self) -> Check:
        demand = f"add @32: modelhost req/s >= {LEAN_ADD_RPS_RATIO_TARGET}x the ceiling's"
        if not self.rounds("add", 32, "modelhost"):
            return Check("lean_add_throughput", demand, "not run", None)
        ratios = self.ratios("add", 32)
        ratio = _median(ratios)
        if ratio is None:
            return Check("lean_add_throughput", demand, "a run FAILED", False)
        measured = f"{ratio:.2f}x" + _listed(ratios, lambda value: f"{value:.2f}x")
        hop = self.ratio("add", 32, HOP_CEILING)
        if hop is not None:
            measured += f" (hop ceiling {hop:.2f}x)"
        return Check("lean_add_throughput", demand, measured, ratio >= LEAN_ADD_RPS_RATIO_TARGET)

    def passed(self) -> bool:
        """Every run clean and no target missed (a skipped target is not a failure)."""
        return all(run.ok for run in self.runs) and all(
            check.passed is not False for check in self.checks()
        )

    def _blocks(self) -> list[tuple[str, int, str]]:
        """Each (case, connections, target) measured, in the order first measured."""
        return list(dict.fromkeys((run.case, run.connections, run.target) for run in self.runs))

    def as_dict(self) -> dict[str, Any]:
        ceilings = {
            (run.case, run.connections, run.round): run.result
            for run in self.runs
            if run.target == "ceiling" and run.ok
        }

        def ratio_of(run: Run) -> float | None:
            ceiling = ceilings.get((run.case, run.connections, run.round))
            if run.target == "ceiling" or not run.ok or ceiling is None or run.result is None:
                return None
            return run.result.rps / ceiling.rps

        return {
            "environment": self.environment,
            "floors": self.floors,
            "round_floors": self.round_floors,
            "runs": [
                {
                    **run.as_dict(),
                    "ratio_to_ceiling": ratio_of(run),
                    "p50_over_floor_ms": self.over_floor(run),
                }
                for run in self.runs
            ],
            "medians": [
                {
                    "case": case,
                    "connections": connections,
                    "target": target,
                    "rounds": len(self.rounds(case, connections, target)),
                    "ratio_to_ceiling": self.ratio(case, connections, target)
                    if target != "ceiling"
                    else None,
                    "p50_over_floor_ms": _median(self.overs_floor(case, target))
                    if connections == 1
                    else None,
                }
                for case, connections, target in self._blocks()
            ],
            "checks": [{**asdict(check), "verdict": check.verdict} for check in self.checks()],
            "batch_sizes": self.batch_sizes,
            "publish_seconds": self.publish_seconds,
            "passed": self.passed(),
        }


_HEADERS = (
    "case",
    "conns",
    "target",
    "req/s",
    "p50 ms",
    "p99 ms",
    "ratio",
    "p50-floor",
    "cpu ms/call",
    "other cpu",
    "status",
)


def _cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def table_rows(report: Report) -> list[list[str]]:
    """One row per (case, connections, target), the medians of its rounds; ratio on the rows
    other than the ceiling's, p50 above the floor on 1-connection rows (both taken round by
    round, then the median)."""
    rows = []
    for case, connections, target in report._blocks():
        run = report.summary(case, connections, target)
        assert run is not None
        result = run.result if run.ok else None
        ratio = report.ratio(case, connections, target) if target != "ceiling" else None
        over = _median(report.overs_floor(case, target)) if connections == 1 else None
        rows.append(
            [
                case,
                str(connections),
                target,
                _cell(result.rps if result else None, 0),
                _cell(result.p50_ms if result else None, 2),
                _cell(result.p99_ms if result else None, 2),
                "" if ratio is None else f"{ratio:.2f}x",
                _cell(over, 2),
                _cell(run.cpu_ms_per_call, 3),
                _cell(run.other_cpu, 2),
                run.status(),
            ]
        )
    return rows


def format_table(rows: list[list[str]], headers: tuple[str, ...] = _HEADERS) -> str:
    """A plain-text table that reads the same in a terminal and in a Markdown code block."""
    cells = [list(headers), *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = {3, 4, 5, 6, 7, 8}
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """The table, the floors and the target verdicts, as printed at the end of a run."""
    lines = [
        format_table(table_rows(report)),
        "",
        "Each row: the median of its rounds. ratio: req/s / the ceiling's req/s in the same "
        "round; hop ceiling: the ceiling with the function in a child process "
        "(--hop-ceiling); p50-floor: p50 minus the function's own in-process p50, the mean "
        "of those measured just before and just after the run; cpu ms/call: CPU the target's "
        "own processes spent per answered call; other cpu: cores used by processes outside "
        "the benchmark during the run (the most of any round).",
        "",
    ]
    for name, floor in report.floors.items():
        lines.append(
            f"floor {name}: p50 {float(floor['p50_ms']):.4f} ms, p99 {float(floor['p99_ms']):.4f}"
            f" ms over {floor['calls']:,} in-process calls (other cpu "
            f"{float(floor.get('other_cpu_cores', 0)):.2f})"
        )
        again = [floors for floors in report.round_floors.get(name, []) if floors]
        if again:
            p50s = "; ".join(
                ", ".join(f"{float(each['p50_ms']):.2f}" for each in floors) for floors in again
            )
            lines.append(
                f"  again around each run at 1 connection ({again[0][0]['calls']:,} calls each), "
                f"round by round: p50 {p50s} ms"
            )
    for name, sizes in report.batch_sizes.items():
        total = sum(sizes.values())
        spread = ", ".join(f"{bucket}: {count:,}" for bucket, count in sizes.items())
        lines.append(f"batches of {name}: {total:,} sent, by size {spread or 'none'}")
    lines.append("")
    for check in report.checks():
        lines.append(f"{check.verdict:7}  {check.demand}: {check.measured}")
    return "\n".join(lines)
