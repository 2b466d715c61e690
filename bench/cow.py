"""Copy-on-write instances: memory and start time of a version's extra instances, sandboxed.

    .venv/bin/python bench/cow.py [--instances 4] [--rounds 3]

Starts one modelhost with ``isolation = sandbox`` and a fresh MODELHOST_HOME, and publishes
``bench/projects/bigarray`` (a 200 MB numpy array built at import) twice: as ``cow`` (instances
forked from the version's fork server, the default) and as ``fresh`` (``fork=False``: each
instance imports the script itself). For each, it scales from one instance up to
``--instances``, one at a time, and for each new instance records:

- the start time: from the ``PATCH`` of ``instance_count`` until the new instance is ready in
  the instances list (polled every 5 ms), and, for a forked one, from its log: the time from
  the server's ``starting instance`` line to the forked instance's first line, and the fork
  time the instance writes (fork request received to serving);
- the memory of every process of the version, read from ``/proc/PID/smaps_rollup``: PSS, RSS
  and USS (private pages) of each instance, and PSS of the fork server.

Then it scales back to one instance and repeats, ``--rounds`` times. The targets (issue 16):
each extra instance adds at most 20 % of the first instance's memory (the version's total PSS
grows by at most 20 % of its total with one instance), and an extra instance starts in at most
100 ms, against a full import. Writes ``bench/results/cow.json``. Exit status: 0 measured, 2
the benchmark could not be set up, 130 interrupted. See bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from typing import Any

import modelhost
from bench import servers
from bench.cases import ROOT

RESULTS = ROOT / "bench" / "results" / "cow.json"
PROJECT = ROOT / "bench" / "projects" / "bigarray"
_POLL_SECONDS = 0.005
_TIMEOUT_SECONDS = 120.0
_FORKED_IN = re.compile(r"instance (\w+) \(pid \d+\) forked from the fork server in ([0-9.]+) ms")
_STAMP = re.compile(r"^(\S+Z) ")


def memory_kb(pid: int) -> dict[str, int]:
    """PSS, RSS and USS (private clean + dirty) of a process, in kB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return {
        "pss": fields["Pss"],
        "rss": fields["Rss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def parent_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise RuntimeError(f"no parent for pid {pid}")


def ready(client: modelhost.Client, model: str) -> list[Any]:
    return [i for i in client.instances(model) if i.state == "ready"]


def wait_count(client: modelhost.Client, model: str, count: int) -> list[Any]:
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        found = client.instances(model)
        if len(found) == count and all(i.state == "ready" for i in found):
            return found
        if any(i.state == "failed" for i in found):
            raise RuntimeError(f"{model}: an instance failed: {found}")
        time.sleep(_POLL_SECONDS)
    raise RuntimeError(f"{model}: not {count} ready instances in {_TIMEOUT_SECONDS:g} s")


def scale_up(client: modelhost.Client, model: str, count: int) -> tuple[float, Any]:
    """Ask for ``count`` instances; seconds until the new one is ready, and that instance."""
    old = {i.id for i in client.instances(model)}
    started = time.monotonic()
    client.update_model(model, instance_count=count)
    while time.monotonic() - started < _TIMEOUT_SECONDS:
        new = [i for i in ready(client, model) if i.id not in old]
        if new:
            return time.monotonic() - started, new[0]
        time.sleep(_POLL_SECONDS)
    raise RuntimeError(f"{model}: no new instance {_TIMEOUT_SECONDS:g} s after scaling up")


def fork_ms(home: Path, instance_id: str) -> tuple[float | None, float | None]:
    """From the instance's log: the fork's own time (request received to serving), and the
    time from the server's ``starting instance`` line to the forked instance's first line."""
    for log in home.glob(f"logs/*/v*-{instance_id}.log"):
        lines = log.read_text(errors="replace").splitlines()
        started = forked = None
        took = None
        for line in lines:
            stamp = _STAMP.match(line)
            if stamp is None:
                continue
            when = dt.datetime.fromisoformat(stamp.group(1).replace("Z", "+00:00"))
            if "starting instance" in line and started is None:
                started = when
            match = _FORKED_IN.search(line)
            if match and match.group(1) == instance_id:
                forked, took = when, float(match.group(2))
        if started and forked:
            return took, (forked - started).total_seconds() * 1000
    return None, None


def measure(
    client: modelhost.Client, home: Path, model: str, instances: int, rounds: int
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for round_number in range(rounds):
        client.update_model(model, instance_count=1)
        first = wait_count(client, model, 1)[0]
        time.sleep(1.0)  # let the stopped instances go before measuring memory
        for count in range(2, instances + 1):
            seconds, new = scale_up(client, model, count)
            running = wait_count(client, model, count)
            time.sleep(0.3)  # the new instance's first pages settle
            members = {i.id: memory_kb(i.pid) for i in running}
            fork_server = parent_of(first.pid) if first.forked else None
            server_kb = memory_kb(fork_server) if fork_server else None
            total = sum(m["pss"] for m in members.values()) + (server_kb or {"pss": 0})["pss"]
            rows.append(
                {
                    "round": round_number + 1,
                    "instances": count,
                    "start_ms": seconds * 1000,
                    "fork_ms": fork_ms(home, new.id)[0],
                    "launch_ms": fork_ms(home, new.id)[1],
                    "new_instance": members[new.id],
                    "first_instance": members[first.id],
                    "fork_server": server_kb,
                    "total_pss_kb": total,
                }
            )
            print(
                f"{model} round {round_number + 1}, instance {count}: ready in "
                f"{seconds * 1000:.0f} ms (fork {rows[-1]['fork_ms']} ms, launch "
                f"{rows[-1]['launch_ms']} ms); new PSS "
                f"{members[new.id]['pss'] / 1024:.0f} MB, USS {members[new.id]['uss'] / 1024:.0f}"
                f" MB, RSS {members[new.id]['rss'] / 1024:.0f} MB; version total PSS "
                f"{total / 1024:.0f} MB",
                flush=True,
            )
    return {"rows": rows}


def one_instance_total(client: modelhost.Client, model: str) -> dict[str, Any]:
    client.update_model(model, instance_count=1)
    first = wait_count(client, model, 1)[0]
    time.sleep(1.0)
    instance = memory_kb(first.pid)
    server = memory_kb(parent_of(first.pid)) if first.forked else None
    return {
        "instance": instance,
        "fork_server": server,
        "total_pss_kb": instance["pss"] + (server["pss"] if server else 0),
    }


def summary(name: str, data: dict[str, Any]) -> dict[str, Any]:
    rows = data["rows"]
    base = data["one_instance"]["total_pss_kb"]
    by_count: dict[int, list[int]] = {}
    for row in rows:
        by_count.setdefault(row["instances"], []).append(row["total_pss_kb"])
    totals = {count: statistics.median(values) for count, values in sorted(by_count.items())}
    steps = [base, *totals.values()]
    added = [later - earlier for earlier, later in itertools.pairwise(steps)]
    return {
        "case": name,
        "one_instance_total_pss_mb": base / 1024,
        "added_pss_per_extra_instance_mb": [a / 1024 for a in added],
        "added_share_of_first": max(added) / base,
        "new_instance_uss_mb_median": statistics.median(r["new_instance"]["uss"] for r in rows)
        / 1024,
        "start_ms_median": statistics.median(r["start_ms"] for r in rows),
        "start_ms_max": max(r["start_ms"] for r in rows),
        "launch_ms_median": (
            statistics.median(r["launch_ms"] for r in rows if r["launch_ms"] is not None)
            if any(r["launch_ms"] is not None for r in rows)
            else None
        ),
        "fork_ms_median": (
            statistics.median(r["fork_ms"] for r in rows if r["fork_ms"] is not None)
            if any(r["fork_ms"] is not None for r in rows)
            else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelhost-cow-") as temp:
        home = Path(temp) / "home"
        server = servers.start_modelhost(
            home, Path(temp) / "modelhost.log", isolation="sandbox", name="sandbox"
        )
        try:
            servers.wait_modelhost(server)
            if not servers.isolation_of(server).get("isolated"):
                print("the server is not sandboxed", file=sys.stderr)
                return 2
            client = modelhost.Client(
                server.url, json.loads((home / "credentials").read_text())["api_key"]
            )
            results: dict[str, Any] = {}
            for name, fork in (("cow", True), ("fresh", False)):
                started = time.monotonic()
                client.publish(PROJECT / "bigarray.py:score", name=name, fork=fork)
                wait_count(client, name, 1)
                publish_s = time.monotonic() - started
                data = measure(client, home, name, options.instances, options.rounds)
                data["one_instance"] = one_instance_total(client, name)
                data["publish_to_ready_s"] = publish_s
                data["summary"] = summary(name, data)
                results[name] = data
                client.stop(name)
        except (RuntimeError, servers.ServerError, modelhost.errors.ModelhostError) as exc:
            print(f"cow benchmark failed: {exc}\n{server.log_tail()}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
        finally:
            servers.stop(server)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    report = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": platform.platform(),
        "cores": len(os.sched_getaffinity(0)),
        "results": results,
    }
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    for name, data in results.items():
        s = data["summary"]
        print(
            f"{name:6} one instance {s['one_instance_total_pss_mb']:.0f} MB PSS; each extra adds "
            f"{', '.join(f'{a:.1f}' for a in s['added_pss_per_extra_instance_mb'])} MB "
            f"(at most {s['added_share_of_first']:.1%} of the first); new instance USS "
            f"{s['new_instance_uss_mb_median']:.1f} MB; extra instance ready in "
            f"{s['start_ms_median']:.0f} ms median, {s['start_ms_max']:.0f} ms max"
            + (
                f"; server start to forked instance {s['launch_ms_median']:.1f} ms, the fork "
                f"{s['fork_ms_median']:.1f} ms"
                if s["fork_ms_median"] is not None
                else ""
            )
        )
    print(f"written to {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
