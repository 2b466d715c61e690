"""The results of one run: the table, the targets (PASS/FAIL) and the JSON file.

The targets come from the issues (DESIGN.md §8 says where they live): modelhost must serve the
tiny function at 32 connections with at least 0.4x the ceiling's requests/s, and add at most
1.5 ms to the random forest's own median at 1 connection.
"""

from __future__ import annotations

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
            "ok": self.ok,
            "error": self.error,
            "other_cpu_cores": self.other_cpu,
            "cpu_ms_per_call": self.cpu_ms_per_call,
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


@dataclass
class Report:
    """Everything a run measured, plus the machine it ran on."""

    environment: dict[str, Any]
    floors: dict[str, dict[str, Any]]
    runs: list[Run] = field(default_factory=list)
    #: per batching case, the batches modelhost sent its instances by size ("<=8": count)
    batch_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: seconds from publishing the add project to its first 200, per round
    publish_seconds: list[float] = field(default_factory=list)

    def find(self, case: str, connections: int, target: str) -> Run | None:
        for run in self.runs:
            if (run.case, run.connections, run.target) == (case, connections, target):
                return run
        return None

    def ratio(self, case: str, connections: int, target: str = "modelhost") -> float | None:
        """``target``'s requests/s over the ceiling's, for the same case and connections."""
        ours = self.find(case, connections, target)
        ceiling = self.find(case, connections, "ceiling")
        if not (ours and ceiling and ours.ok and ceiling.ok):
            return None
        assert ours.result is not None
        assert ceiling.result is not None
        return ours.result.rps / ceiling.result.rps

    def over_floor(self, run: Run) -> float | None:
        """p50 minus the function's own in-process p50 (1-connection runs only)."""
        floor = self.floors.get(run.case)
        if run.connections != 1 or floor is None or not run.ok or run.result is None:
            return None
        return run.result.p50_ms - float(floor["p50_ms"])

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
        ours = self.find("rf_batch", 32, "modelhost")
        if ours is None:
            return Check("batch_throughput", demand, "not run", None)
        if ours.result is None or not ours.ok:
            return Check("batch_throughput", demand, "the run FAILED", False)
        ceiling = self.find("rf", 32, "ceiling") or self.find("rf_batch", 32, "ceiling")
        times = (
            f", {ours.result.rps / ceiling.result.rps:.1f}x the ceiling's rf"
            if ceiling is not None and ceiling.result is not None
            else ""
        )
        measured = f"{ours.result.rps:,.0f} req/s, p99 {ours.result.p99_ms:.2f} ms{times}"
        passed = ours.result.rps >= BATCH_RPS_TARGET and ours.result.p99_ms <= BATCH_P99_BUDGET_MS
        return Check("batch_throughput", demand, measured, passed)

    def _check_batch_latency(self) -> Check:
        demand = f"rf_batch @1: modelhost p50 <= floor p50 + {BATCH_P50_BUDGET_MS} ms"
        ours = self.find("rf_batch", 1, "modelhost")
        floor = self.floors.get("rf_batch")
        if ours is None or floor is None:
            return Check("batch_latency", demand, "not run", None)
        over = self.over_floor(ours)
        if over is None or ours.result is None:
            return Check("batch_latency", demand, "the run FAILED", False)
        measured = (
            f"{ours.result.p50_ms:.2f} ms = floor {float(floor['p50_ms']):.2f} ms + {over:.2f} ms"
        )
        return Check("batch_latency", demand, measured, over <= BATCH_P50_BUDGET_MS)

    def _check_add_throughput(self) -> Check:
        demand = f"add @32: modelhost req/s >= {ADD_RPS_RATIO_TARGET}x the ceiling's"
        ours, ceiling = self.find("add", 32, "modelhost"), self.find("add", 32, "ceiling")
        if ours is None or ceiling is None:
            return Check("add_throughput", demand, "not run", None)
        ratio = self.ratio("add", 32)
        if ratio is None or ours.result is None or ceiling.result is None:
            return Check("add_throughput", demand, "a run FAILED", False)
        measured = f"{ours.result.rps:,.0f} / {ceiling.result.rps:,.0f} = {ratio:.2f}x"
        return Check("add_throughput", demand, measured, ratio >= ADD_RPS_RATIO_TARGET)

    def _check_lean_latency(self) -> Check:
        demand = f"add @1: modelhost p50 <= the ceiling's p50 + {LEAN_ADD_P50_BUDGET_MS} ms"
        ours, ceiling = self.find("add", 1, "modelhost"), self.find("add", 1, "ceiling")
        if ours is None or ceiling is None:
            return Check("lean_add_latency", demand, "not run", None)
        if not (ours.ok and ceiling.ok and ours.result and ceiling.result):
            return Check("lean_add_latency", demand, "a run FAILED", False)
        over = ours.result.p50_ms - ceiling.result.p50_ms
        measured = (
            f"{ours.result.p50_ms:.2f} ms = ceiling {ceiling.result.p50_ms:.2f} ms + {over:.2f} ms"
        )
        hop = self.find("add", 1, HOP_CEILING)
        if hop is not None and hop.ok and hop.result is not None:
            measured += f" (hop ceiling {hop.result.p50_ms:.2f} ms)"
        return Check("lean_add_latency", demand, measured, over <= LEAN_ADD_P50_BUDGET_MS)

    def _check_lean_throughput(self) -> Check:
        demand = f"add @32: modelhost req/s >= {LEAN_ADD_RPS_RATIO_TARGET}x the ceiling's"
        ratio = self.ratio("add", 32)
        if self.find("add", 32, "modelhost") is None:
            return Check("lean_add_throughput", demand, "not run", None)
        if ratio is None:
            return Check("lean_add_throughput", demand, "a run FAILED", False)
        measured = f"{ratio:.2f}x"
        hop = self.ratio("add", 32, HOP_CEILING)
        if hop is not None:
            measured += f" (hop ceiling {hop:.2f}x)"
        return Check("lean_add_throughput", demand, measured, ratio >= LEAN_ADD_RPS_RATIO_TARGET)

    def _check_rf_latency(self) -> Check:
        demand = f"rf @1: modelhost p50 <= floor p50 + {RF_P50_BUDGET_MS} ms"
        ours = self.find("rf", 1, "modelhost")
        floor = self.floors.get("rf")
        if ours is None or floor is None:
            return Check("rf_latency", demand, "not run", None)
        over = self.over_floor(ours)
        if over is None or ours.result is None:
            return Check("rf_latency", demand, "the run FAILED", False)
        measured = (
            f"{ours.result.p50_ms:.2f} ms = floor {float(floor['p50_ms']):.2f} ms + {over:.2f} ms"
        )
        return Check("rf_latency", demand, measured, over <= RF_P50_BUDGET_MS)

    def passed(self) -> bool:
        """Every run clean and no target missed (a skipped target is not a failure)."""
        return all(run.ok for run in self.runs) and all(
            check.passed is not False for check in self.checks()
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "floors": self.floors,
            "runs": [
                {
                    **run.as_dict(),
                    "ratio_to_ceiling": self.ratio(run.case, run.connections, run.target)
                    if run.target != "ceiling"
                    else None,
                    "p50_over_floor_ms": self.over_floor(run),
                }
                for run in self.runs
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
    """One row per run; ratio on modelhost rows, p50 above the floor on 1-connection rows."""
    rows = []
    for run in report.runs:
        result = run.result
        ratio = (
            report.ratio(run.case, run.connections, run.target) if run.target != "ceiling" else None
        )
        rows.append(
            [
                run.case,
                str(run.connections),
                run.target,
                _cell(result.rps if result else None, 0),
                _cell(result.p50_ms if result else None, 2),
                _cell(result.p99_ms if result else None, 2),
                "" if ratio is None else f"{ratio:.2f}x",
                _cell(report.over_floor(run), 2),
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
        "ratio: req/s / the ceiling's req/s; hop ceiling: the ceiling with the function in a "
        "child process (--hop-ceiling); p50-floor: p50 minus the function's own "
        "in-process p50; cpu ms/call: CPU the target's own processes spent per answered "
        "call; other cpu: cores used by processes outside the benchmark during the run.",
        "",
    ]
    for name, floor in report.floors.items():
        lines.append(
            f"floor {name}: p50 {float(floor['p50_ms']):.4f} ms, p99 {float(floor['p99_ms']):.4f}"
            f" ms over {floor['calls']:,} in-process calls (other cpu "
            f"{float(floor.get('other_cpu_cores', 0)):.2f})"
        )
    for name, sizes in report.batch_sizes.items():
        total = sum(sizes.values())
        spread = ", ".join(f"{bucket}: {count:,}" for bucket, count in sizes.items())
        lines.append(f"batches of {name}: {total:,} sent, by size {spread or 'none'}")
    lines.append("")
    for check in report.checks():
        lines.append(f"{check.verdict:7}  {check.demand}: {check.measured}")
    return "\n".join(lines)
