"""Instance start time with the sandbox and without it, measured side by side in one run.

    .venv/bin/python bench/startup.py [--starts 10] [--cases add,rf]

Starts two modelhost servers, each with a fresh MODELHOST_HOME: one with ``isolation = sandbox``
(bubblewrap; the server refuses to start without a working one) and one with ``isolation =
none``. Publishes each case on both with one instance, then restarts that model ``--starts``
times on each server, alternating between them (and which goes first), and times each restart
from the ``POST /api/v1/models/{model}/restart`` until the new instance shows ``ready`` in the
instances list. The first start of each model (at publishing) is not counted. Prints the median,
min and max per case and isolation and the sandbox's cost (difference and ratio of the medians,
and the median difference within a round, whose two starts follow each other), and writes
``bench/results/startup.json``. Exit status: 0 measured, 2 the benchmark could not be
set up or an instance did not start, 130 interrupted. See bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts bench/ on the path, not the repository root that holds `bench`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import orjson

import modelhost
from bench import cpu, deploy, servers
from bench.cases import CASES, ROOT, Case

RESULTS = ROOT / "bench" / "results" / "startup.json"
#: the sandboxed server first: ``sandbox`` (not ``auto``) so it cannot silently run without one
ISOLATIONS = ("sandbox", "none")
#: how often the instances list is read while a new instance starts (the timing's resolution)
_POLL_SECONDS = 0.01
#: after each start, once the old instance is gone, before the next one
_SETTLE_SECONDS = 0.5
_START_TIMEOUT_SECONDS = 120.0


def _case_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in CASES:
            raise argparse.ArgumentTypeError(f"unknown case {name!r}; choose from {sorted(CASES)}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=_positive, default=10, help="Timed starts per server.")
    parser.add_argument("--cases", type=_case_names, default=["add", "rf"])
    parser.add_argument("--output", type=Path, default=RESULTS, help="Where the JSON goes.")
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Start:
    """One timed restart: from the request until the new instance was ready."""

    case: str
    isolation: str
    seconds: float
    #: cores' worth of CPU used by processes outside the benchmark meanwhile
    other_cpu: float


# --------------------------------------------------------------------------- the servers


def client_for(server: servers.Server, home: Path) -> modelhost.Client:
    """A client of this server with the admin key it wrote to ``home/credentials``."""
    try:
        saved = json.loads((home / "credentials").read_text())
    except (OSError, ValueError) as exc:
        raise servers.ServerError(f"{server.name}: no readable credentials in {home}") from exc
    return modelhost.Client(server.url, saved["api_key"])


@contextlib.contextmanager
def started_servers(workdir: Path) -> Iterator[dict[str, tuple[servers.Server, Path]]]:
    """One modelhost per isolation mode, each ready with its home; all stopped on exit."""
    with contextlib.ExitStack() as stack:
        running = {}
        for isolation in ISOLATIONS:
            home = workdir / isolation / "home"
            home.parent.mkdir()
            server = servers.start_modelhost(
                home, workdir / isolation / "modelhost.log", isolation=isolation, name=isolation
            )
            stack.callback(servers.stop, server)
            running[isolation] = (server, home)
        for server, _ in running.values():
            servers.wait_modelhost(server)
        try:
            yield running
        except Exception:
            # The logs are in a temporary directory that is about to go: show their ends.
            for server, _ in running.values():
                print(f"--- end of {server.name}'s log:\n{server.log_tail()}", file=sys.stderr)
            raise


def check_isolation(server: servers.Server, isolation: str) -> dict[str, Any]:
    """The server must confine code as asked, or the comparison means nothing."""
    found = servers.isolation_of(server)
    if bool(found.get("isolated")) != (isolation != "none"):
        raise servers.ServerError(f"{server.name}: asked for isolation={isolation}, has {found}")
    return found


# --------------------------------------------------------------------------- the starts


def _new_ready(client: modelhost.Client, model: str, old: set[str]) -> bool:
    """Whether an instance not in ``old`` is ready; raises if it failed to start."""
    for instance in client.instances(model):
        if instance["id"] in old:
            continue
        if instance["state"] == "ready":
            return True
        if instance["state"] == "failed":
            raise deploy.DeployError(f"{model}: instance failed: {instance.get('failure')}")
    return False


def time_restart(
    client: modelhost.Client, case: Case, pids: Sequence[int], server: servers.Server
) -> tuple[float, float]:
    """Restart the case's model; the seconds until its new instance is ready, and others' CPU.

    Waits afterwards until only the new instance is left, so starts do not overlap."""
    old = {instance["id"] for instance in client.instances(case.model)}
    before = cpu.snapshot(pids)
    started = time.monotonic()
    client.restart(case.model)
    while not _new_ready(client, case.model, old):
        if time.monotonic() - started > _START_TIMEOUT_SECONDS:
            raise deploy.DeployError(
                f"{server.name}: no new ready instance of {case.model} "
                f"{_START_TIMEOUT_SECONDS:g} s after a restart"
            )
        time.sleep(_POLL_SECONDS)
    seconds = time.monotonic() - started
    # The new instance's processes did not exist before: all their CPU is ours.
    after = cpu.snapshot([*pids, *servers.descendants(server.process.pid)])
    deploy.wait_for_instances(client, dataclasses.replace(case, instances=1))
    server.remember_descendants()
    return seconds, cpu.foreign_cores(before, after)


def measure_starts(
    cases: Sequence[Case],
    clients: dict[str, modelhost.Client],
    running: dict[str, tuple[servers.Server, Path]],
    starts: int,
) -> list[Start]:
    """``starts`` restarts per case on each server, alternating servers and who goes first."""
    measured = []
    for case in cases:
        for index in range(starts):
            order = ISOLATIONS if index % 2 == 0 else ISOLATIONS[::-1]
            for isolation in order:
                time.sleep(_SETTLE_SECONDS)
                pids = []
                for server, _ in running.values():
                    pids.append(server.process.pid)
                    pids.extend(servers.descendants(server.process.pid))
                server = running[isolation][0]
                seconds, other = time_restart(clients[isolation], case, pids, server)
                measured.append(Start(case.name, isolation, seconds, other))
                print(
                    f"{case.name} {isolation:7} start {index + 1}/{starts}: "
                    f"{seconds * 1000:.0f} ms (other cpu {other:.2f})",
                    flush=True,
                )
    return measured


# --------------------------------------------------------------------------- the report


def _times(measured: Sequence[Start], case: str, isolation: str) -> list[float]:
    """The case's start times in ms on one server, in the order of the rounds."""
    return [s.seconds * 1000 for s in measured if (s.case, s.isolation) == (case, isolation)]


def summary(measured: Sequence[Start], cases: Sequence[Case]) -> dict[str, Any]:
    """Per case and isolation: median, min and max in ms; per case, the sandbox's cost, both
    as the difference of the medians and paired by round (the two starts of a round follow
    each other, so they see the same machine)."""
    rows = []
    costs = []
    for case in cases:
        for isolation in ISOLATIONS:
            times = _times(measured, case.name, isolation)
            others = [
                s.other_cpu for s in measured if (s.case, s.isolation) == (case.name, isolation)
            ]
            rows.append(
                {
                    "case": case.name,
                    "isolation": isolation,
                    "starts": len(times),
                    "median_ms": statistics.median(times),
                    "min_ms": min(times),
                    "max_ms": max(times),
                    "other_cpu_median": statistics.median(others),
                }
            )
        sandboxed, bare = (
            _times(measured, case.name, "sandbox"),
            _times(measured, case.name, "none"),
        )
        paired = [a - b for a, b in zip(sandboxed, bare, strict=True)]
        costs.append(
            {
                "case": case.name,
                "median_difference_ms": statistics.median(sandboxed) - statistics.median(bare),
                "median_ratio": statistics.median(sandboxed) / statistics.median(bare),
                "paired_median_difference_ms": statistics.median(paired),
                "rounds_sandbox_slower": sum(d > 0 for d in paired),
                "rounds": len(paired),
            }
        )
    return {"rows": rows, "cost": costs}


def format_summary(result: dict[str, Any]) -> str:
    """The table of start times, then one line per case on what the sandbox costs."""
    headers = ["case", "isolation", "starts", "median ms", "min ms", "max ms", "other cpu"]
    lines = [headers]
    for row in result["rows"]:
        lines.append(
            [
                row["case"],
                row["isolation"],
                str(row["starts"]),
                f"{row['median_ms']:.0f}",
                f"{row['min_ms']:.0f}",
                f"{row['max_ms']:.0f}",
                f"{row['other_cpu_median']:.2f}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    text = [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    text.append("")
    for cost in result["cost"]:
        text.append(
            f"{cost['case']}: the sandbox costs {cost['median_difference_ms']:+.0f} ms on the "
            f"medians ({cost['median_ratio']:.2f}x); paired by round "
            f"{cost['paired_median_difference_ms']:+.0f} ms, the sandboxed start slower in "
            f"{cost['rounds_sandbox_slower']} of {cost['rounds']} rounds"
        )
    return "\n".join(text)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def environment() -> dict[str, Any]:
    """The machine and code the numbers belong to."""
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "modelhost": modelhost.__version__,
        "git": _git("describe", "--always", "--dirty", "--exclude", "*"),
        "src_changes": _git("status", "--porcelain", "--", "src"),
        "euid": os.geteuid(),
    }


# --------------------------------------------------------------------------- the run


def run(options: argparse.Namespace) -> dict[str, Any]:
    cases = [dataclasses.replace(CASES[name], instances=1) for name in dict.fromkeys(options.cases)]
    report: dict[str, Any] = {"environment": environment()}
    if any(case.name == "rf" for case in cases):
        deploy.ensure_wine_model()
    with (
        tempfile.TemporaryDirectory(prefix="modelhost-bench-startup-") as tmp,
        started_servers(Path(tmp)) as running,
        contextlib.ExitStack() as stack,
    ):
        clients = {}
        for isolation, (server, home) in running.items():
            report["environment"][f"isolation_{isolation}"] = check_isolation(server, isolation)
            clients[isolation] = stack.enter_context(client_for(server, home))
        for case in cases:
            for isolation, client in clients.items():
                print(f"publishing {case.model} on the {isolation} server", flush=True)
                deploy.publish(client, case)
                running[isolation][0].remember_descendants()
        measured = measure_starts(cases, clients, running, options.starts)
    report["environment"]["loadavg_at_end"] = os.getloadavg()
    report["starts"] = [dataclasses.asdict(start) for start in measured]
    report["summary"] = summary(measured, cases)
    return report


def _interrupt_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # stop the servers on kill too
    try:
        report = run(options)
    except KeyboardInterrupt:
        print("\ninterrupted; every server this run started has been stopped", file=sys.stderr)
        return 130
    except (
        servers.ServerError,
        deploy.DeployError,
        modelhost.ModelhostError,
        subprocess.SubprocessError,
        OSError,
    ) as exc:
        print(f"\nbenchmark could not run: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_summary(report["summary"]))
    print(
        "\nmedian, min, max: from POST .../restart until the new instance is ready; other cpu: "
        "the median of the cores used by processes outside the benchmark during each start."
    )
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nwrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
