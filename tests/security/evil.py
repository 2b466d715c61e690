"""What an "evil" model or run tries once it runs on the server: the same probes serve both.

As a model, ``probe(targets)`` is its function; as a run, ``python evil.py TARGETS_JSON``
prints the same answer as one JSON line. Each probe reports what happened instead of raising,
so one call shows the test everything the code could and could not do.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import threading
from typing import Any


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.read(64)
        return "read"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _write(path: str) -> str:
    try:
        with open(path, "w") as handle:
            handle.write("pwned")
        return "written"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _environments(marker: str) -> list[str]:
    """The /proc entries whose environment shows ``marker``: another model's secret."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(name)
            except OSError:
                continue
    return found


def _connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            return "connected"
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


def _threads(count: int) -> int:
    """How many threads of ``count`` could start before the process limit said no."""
    release = threading.Event()
    started = []
    try:
        for _ in range(count):
            thread = threading.Thread(target=release.wait)
            thread.start()
            started.append(thread)
    except RuntimeError:
        pass
    finally:
        release.set()
        for thread in started:
            thread.join()
    return len(started)


def _files(count: int) -> int:
    """How many of ``count`` files could be open at once before the limit said no."""
    opened = []
    try:
        for _ in range(count):
            opened.append(open(os.devnull))  # noqa: SIM115
    except OSError:
        pass
    finally:
        for handle in opened:
            handle.close()
    return len(opened)


def _open_files() -> dict[str, str]:
    """What each of this process's open file descriptors is (a path, ``socket:[...]``,
    ``/memfd:...``), as the kernel names it."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself had open
            continue
    return found


def probe(targets: dict[str, Any]) -> dict[str, Any]:
    secret = targets.get("secret", "")
    answer = {
        "open_files": _open_files(),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "working_dir": os.environ.get("MODELHOST_WORKING_DIR"),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "pids": sorted(int(n) for n in os.listdir("/proc") if n.isdigit()),
        "home_listing": sorted(os.listdir(targets["home"]))
        if os.path.isdir(targets["home"])
        else None,
        "reads": {path: _read(path) for path in targets.get("read", [])},
        "writes": {path: _write(path) for path in targets.get("write", [])},
        "environ_with_secret": _environments(secret) if secret else [],
        "limits": {
            "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[1],
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        },
    }
    if "port" in targets:
        answer["connect"] = _connect(targets["port"])
    if "threads" in targets:
        answer["threads"] = _threads(targets["threads"])
    if "files" in targets:
        answer["files"] = _files(targets["files"])
    return answer


if __name__ == "__main__":
    print("EVIL " + json.dumps(probe(json.loads(sys.argv[1]))), flush=True)
