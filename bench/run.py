"""Benchmark modelhost's invocation path against a ceiling and a floor, in one run.

    .venv/bin/python bench/run.py [--duration 5] [--rounds 3] [--cases add,rf] \
        [--connections 1,32]

Measures, in this order: the floor (each function alone, in-process); then, with modelhost and
the ceiling both running on 127.0.0.1, every (case, connections) in rounds, each round with
wrk against the ceiling and then modelhost (the other way round every other round), each after
a warm-up, and at 1 connection the floor again before the round. Prints a table and the target
verdicts and writes ``bench/results/latest.json``. Exit status: 0 all runs clean and targets
met, 1 a run failed or a target was missed, 2 the benchmark could not be set up, 130
interrupted. See bench/README.md.
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
import os
import platform
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

import orjson

import modelhost
from bench import cpu, deploy, servers, wrk
from bench.cases import CASES, ROOT, SINGLE_THREAD_ENV, Case
from bench.report import HOP_CEILING, Report, Run, format_report

RESULTS = ROOT / "bench" / "results" / "latest.json"
CEILING_WORKERS = 2
TARGETS = ("ceiling", "modelhost")
_FLOOR_TIMEOUT_SECONDS = 600


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def _case_name(name: str) -> str:
    if name not in CASES:
        raise argparse.ArgumentTypeError(f"unknown case {name!r}; choose from {sorted(CASES)}")
    return name


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=_positive, default=5, help="Seconds per wrk run.")
    parser.add_argument("--warmup", type=int, default=2, help="Seconds of warm-up before each.")
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=3,
        help="Rounds per case and connections, each measuring every target back to back; "
        "the verdicts take the median of the rounds' figures.",
    )
    parser.add_argument("--cases", type=_csv(_case_name), default=["add", "rf", "rf_batch"])
    parser.add_argument("--connections", type=_csv(_positive), default=[1, 32])
    parser.add_argument("--output", type=Path, default=RESULTS, help="Where the JSON goes.")
    parser.add_argument(
        "--gateway-processes",
        type=_positive,
        default=CEILING_WORKERS,
        help="modelhost's gateway_processes setting (default: as many as the ceiling's workers).",
    )
    parser.add_argument(
        "--isolation",
        choices=("auto", "sandbox", "none"),
        default=None,
        help="modelhost's isolation setting (default: the server's, auto: sandboxed where "
        "bubblewrap works); the run records what /health says.",
    )
    parser.add_argument(
        "--hop-ceiling",
        action="store_true",
        help="Also measure the ceiling with the function in a child process "
        "(bench/hop_ceiling.py): what any server that runs code outside its process pays.",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="modelhost's backend setting. ray: the run starts a one-node Ray cluster on "
        "127.0.0.1 (ray.cluster_utils) and serves every instance through it.",
    )
    parser.add_argument(
        "--token-limits",
        metavar="RATE,QUOTA",
        default=None,
        help="Give the benchmark's access tokens a rate and a quota, such as "
        "1000000/s,1000000000/day (high enough never to refuse a call), to measure what "
        "checking them costs; default: no limits.",
    )
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- the floor


def measure_floor(case: Case, calls: int | None = None) -> dict[str, Any]:
    """The function alone, in its own process (see bench/floor.py): ``calls`` timed calls, by
    default the case's own number."""
    before = cpu.snapshot([])
    done = subprocess.run(
        [sys.executable, "-m", "bench.floor", case.name, "--calls", str(calls or case.floor_calls)],
        cwd=ROOT,
        env={**os.environ, **SINGLE_THREAD_ENV},
        capture_output=True,
        timeout=_FLOOR_TIMEOUT_SECONDS,
        check=True,
    )
    floor: dict[str, Any] = orjson.loads(done.stdout)
    floor["other_cpu_cores"] = cpu.foreign_cores(before, cpu.snapshot([]))
    return floor


# --------------------------------------------------------------------------- the servers


def targets(options: argparse.Namespace) -> tuple[str, ...]:
    """Who is measured, in this order, back to back for each case and connections."""
    return (*TARGETS, HOP_CEILING) if options.hop_ceiling else TARGETS


def url_for(target: str, case: Case, server: servers.Server) -> str:
    if target == "modelhost":
        return f"{server.url}/models/{case.model}/latest/model"
    return f"{server.url}{case.ceiling}"


def ray_cluster(stack: contextlib.ExitStack) -> dict[str, str]:
    """A one-node Ray cluster for the run (shut down with ``stack``), and the settings that
    point modelhost at it."""
    from ray.cluster_utils import Cluster  # only with --backend ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    stack.callback(cluster.shutdown)
    return {
        "MODELHOST_BACKEND": "ray",
        "MODELHOST_RAY_ADDRESS": str(cluster.address),
        "MODELHOST_RAY_INSTANCE_CPUS": "0.1",
    }


@contextlib.contextmanager
def started_servers(
    workdir: Path,
    gateway_processes: int,
    isolation: str | None,
    backend: str = "local",
    hop_ceiling: bool = False,
) -> Iterator[dict[str, servers.Server]]:
    """modelhost (fresh MODELHOST_HOME) and the ceiling (and the hop ceiling), all ready; all
    stopped on exit."""
    with contextlib.ExitStack() as stack:
        extra = ray_cluster(stack) if backend == "ray" else {}
        modelhost_server = servers.start_modelhost(
            workdir / "home",
            workdir / "modelhost.log",
            gateway_processes=gateway_processes,
            isolation=isolation,
            extra=extra,
        )
        stack.callback(servers.stop, modelhost_server)
        ceiling = servers.start_ceiling(workdir / "ceiling.log", workers=CEILING_WORKERS)
        stack.callback(servers.stop, ceiling)
        running = {"modelhost": modelhost_server, "ceiling": ceiling}
        if hop_ceiling:
            hop = servers.start_ceiling(
                workdir / "hop-ceiling.log", workers=CEILING_WORKERS, module="bench.hop_ceiling"
            )
            stack.callback(servers.stop, hop)
            running[HOP_CEILING] = hop
        servers.wait_modelhost(modelhost_server)
        for name, server in running.items():
            if name != "modelhost":
                servers.wait_ceiling(server, workers=CEILING_WORKERS)
        try:
            yield running
        except Exception:
            # The logs are in a temporary directory that is about to go: show their ends.
            for server in running.values():
                print(f"--- end of {server.name}'s log:\n{server.log_tail()}", file=sys.stderr)
            raise


def deploy_cases(
    server: servers.Server, home: Path, cases: Sequence[Case], token_limits: str | None = None
) -> dict[str, dict[str, str]]:
    """Publish every case with the client (which finds the server through MODELHOST_HOME);
    returns the headers each case's callers must send (an access token, if one is needed)."""
    for name in ("MODELHOST_URL", "MODELHOST_API_KEY"):
        os.environ.pop(name, None)
    os.environ["MODELHOST_HOME"] = str(home)
    headers = {}
    with modelhost.Client() as client:
        if client.url != server.url:
            raise deploy.DeployError(f"the credentials point at {client.url}, not {server.url}")
        for case in cases:
            print(f"publishing {case.model} ({case.instances} instance(s))", flush=True)
            deploy.publish(client, case)
            headers[case.name] = deploy.invocation_headers(client, case, token_limits)
    for case in cases:
        if headers[case.name]:
            deploy.wait_for_token(url_for("modelhost", case, server), case, headers[case.name])
    server.remember_descendants()  # the instances, so they are stopped even if orphaned
    return headers


def ceiling_nodelay(server: servers.Server) -> str:
    """What the ceiling found on its accepted sockets (uvloop sets TCP_NODELAY by itself)."""
    found = re.findall(r"TCP_NODELAY was (\d) on accept", server.log_tail(500))
    if not found:
        return "unknown (no connection logged)"
    return "already on" if set(found) == {"1"} else "was off, forced on"


# --------------------------------------------------------------------------- wrk


def our_pids(running: dict[str, servers.Server]) -> list[int]:
    """The servers and everything below them (ceiling workers, modelhost's instances)."""
    pids = []
    for server in running.values():
        pids.append(server.process.pid)
        pids.extend(servers.descendants(server.process.pid))
    return pids


def measure(
    target: str,
    case: Case,
    connections: int,
    round_: int,
    url: str,
    script: Path,
    options: argparse.Namespace,
    pids: list[int],
    own: list[int],
) -> Run:
    """A warm-up run (thrown away), then the measured one, noting others' CPU use during it
    and the CPU the target's own processes (``own``: the server and all below it) spent."""
    print(f"wrk {case.name} x{connections} -> {target} ...", end=" ", flush=True)
    try:
        if options.warmup > 0:
            wrk.run(url, script, connections=connections, seconds=options.warmup)
        before, spent = cpu.snapshot(pids), cpu.seconds_of(own)
        result = wrk.run(url, script, connections=connections, seconds=options.duration)
        other = cpu.foreign_cores(before, cpu.snapshot(pids))
        spent = cpu.seconds_of(own) - spent
    except wrk.WrkError as exc:
        print("FAILED")
        return Run(case.name, connections, target, None, str(exc), round=round_)
    per_call = spent * 1000 / result.requests if result.requests else None
    run = Run(
        case.name,
        connections,
        target,
        result,
        other_cpu=other,
        cpu_ms_per_call=per_call,
        round=round_,
    )
    print(
        f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, other CPU {other:.2f} cores, "
        f"{run.status()}",
        flush=True,
    )
    return run


def round_order(round_: int, options: argparse.Namespace) -> tuple[str, ...]:
    """The targets of a round, in the order measured: reversed every other round, so that a
    machine slowing down (or speeding up) through a round favours none of them."""
    order = targets(options)
    return order if round_ % 2 else order[::-1]


def measure_all(
    report: Report,
    cases: Sequence[Case],
    running: dict[str, servers.Server],
    workdir: Path,
    options: argparse.Namespace,
    headers: dict[str, dict[str, str]],
) -> None:
    """Every case x connections in ``options.rounds`` rounds, each measuring every target back
    to back so that they see similar noise; at 1 connection, the floor is measured again before
    the round's first target and after each (the servers idle meanwhile), and each run's p50 is
    compared with the mean of the two floors around it.

    Every target gets the same request bytes, access token included (the ceilings ignore it).
    """
    pids = our_pids(running)
    own = {target: our_pids({target: server}) for target, server in running.items()}
    for case in cases:
        script = wrk.write_script(workdir, case.name, case.body, headers[case.name])
        for connections in options.connections:
            for round_ in range(1, options.rounds + 1):
                print(f"{case.name} x{connections}, round {round_} of {options.rounds}", flush=True)
                floors: list[dict[str, Any]] = []
                if connections == 1:
                    floors.append(measure_floor(case, case.round_floor_calls))
                    report.round_floors.setdefault(case.name, []).append(floors)
                for target in round_order(round_, options):
                    url = url_for(target, case, running[target])
                    run = measure(
                        target, case, connections, round_, url, script, options, pids, own[target]
                    )
                    if floors:
                        floors.append(measure_floor(case, case.round_floor_calls))
                        around = (float(floors[-2]["p50_ms"]) + float(floors[-1]["p50_ms"])) / 2
                        run = dataclasses.replace(run, floor_p50_ms=around)
                    report.runs.append(run)


# --------------------------------------------------------------------------- the run


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()
    return "unknown"


def environment(options: argparse.Namespace) -> dict[str, Any]:
    """The machine and code the numbers belong to: they mean nothing without it."""
    version = subprocess.run(
        [wrk.wrk_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.splitlines()
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "modelhost": modelhost.__version__,
        "git": _git("describe", "--always", "--dirty", "--exclude", "*"),
        "src_changes": _git("status", "--porcelain", "--", "src"),
        "wrk": version[0] if version else "unknown",
        "duration_s": options.duration,
        "rounds": options.rounds,
        "warmup_s": options.warmup,
        "ceiling_workers": CEILING_WORKERS,
        "modelhost_gateway_processes": options.gateway_processes,
        "modelhost_token_limits": options.token_limits,
        "modelhost_backend": options.backend,
    }


def run_suite(options: argparse.Namespace) -> Report:
    cases = [CASES[name] for name in dict.fromkeys(options.cases)]
    report = Report(environment=environment(options), floors={})
    deploy.ensure_wine_model()  # the ceiling loads the forest whichever cases run
    for case in cases:
        print(f"floor {case.name}: {case.floor_calls:,} in-process calls", flush=True)
        report.floors[case.name] = measure_floor(case)
    with (
        tempfile.TemporaryDirectory(prefix="modelhost-bench-") as tmp,
        started_servers(
            Path(tmp),
            options.gateway_processes,
            options.isolation,
            options.backend,
            options.hop_ceiling,
        ) as running,
    ):
        isolation = servers.isolation_of(running["modelhost"])
        report.environment["modelhost_isolation"] = isolation
        print(f"modelhost isolation: {isolation.get('sandbox', 'unknown')}", flush=True)
        headers = deploy_cases(
            running["modelhost"], Path(tmp) / "home", cases, options.token_limits
        )
        report.environment["modelhost_auth"] = {
            name: "bearer token" if sent else "none (public)" for name, sent in headers.items()
        }
        for case in cases:
            for target in targets(options):
                url = url_for(target, case, running[target])
                expected = report.floors[case.name]["result"]
                deploy.check_answer(url, case, expected, headers[case.name])
        measure_all(report, cases, running, Path(tmp), options, headers)
        with modelhost.Client() as client:
            for case in cases:
                if case.batch_max_size is not None:
                    report.batch_sizes[case.name] = deploy.batch_sizes(client, case)
            if "add" in options.cases:
                print("publish to serving: add, 3 rounds", flush=True)
                report.publish_seconds = deploy.publish_to_serving(client, CASES["add"])
        report.environment["ceiling_tcp_nodelay"] = ceiling_nodelay(running["ceiling"])
    report.environment["loadavg_at_end"] = os.getloadavg()
    return report


def _interrupt_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # stop the servers on kill too
    try:
        report = run_suite(options)
    except KeyboardInterrupt:
        print("\ninterrupted; every server this run started has been stopped", file=sys.stderr)
        return 130
    except (
        servers.ServerError,
        deploy.DeployError,
        wrk.WrkError,
        modelhost.ModelhostError,
        subprocess.SubprocessError,
        OSError,
    ) as exc:
        print(f"\nbenchmark could not run: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_report(report))
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    print(f"\nwrote {options.output}")
    return 0 if report.passed() else 1


if __name__ == "__main__":
    sys.exit(main())
