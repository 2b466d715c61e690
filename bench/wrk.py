"""Drive wrk and read its report: requests/s, p50/p99 latency and the error counts.

wrk keeps its connections alive and is written in C, so on a 2-core machine it costs the
servers far less CPU than a Python load generator would. A Lua script makes it POST the body.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
#: wrk's own grace: it stops itself after ``duration``; this bounds a wedged one.
_EXTRA_SECONDS = 30
#: wrk leaves requests slower than its timeout (default 2 s) out of the latency figures and
#: counts them as errors; 10 s keeps an overloaded server's slow tail in the p99 instead.
_REQUEST_TIMEOUT_SECONDS = 10


class WrkError(Exception):
    """wrk is missing, failed, hung, or printed something this parser does not understand."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, reduced to what the report needs."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def ok(self) -> bool:
        """A run with errors measured something other than the function being served."""
        return self.requests > 0 and self.non_2xx == 0 and self.socket_errors == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed; run `apt-get install -y wrk` (see bench/README.md).")
    return found


def _lua_string(text: str) -> str:
    """``text`` as a double-quoted Lua string literal: printable ASCII as is, any other byte
    (and the quote and backslash) as a decimal escape, so any body survives."""
    plain = set(range(32, 127)) - {ord('"'), ord("\\")}
    return '"' + "".join(chr(b) if b in plain else f"\\{b:03d}" for b in text.encode()) + '"'


def write_script(
    directory: Path, name: str, body: bytes, headers: Mapping[str, str] | None = None
) -> Path:
    """A Lua script that makes every request ``POST`` ``body`` as JSON, with ``headers``."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {_lua_string(body.decode('utf-8'))}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [
        f"wrk.headers[{_lua_string(key)}] = {_lua_string(value)}"
        for key, value in (headers or {}).items()
    ]
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def threads_for(connections: int) -> int:
    """1 thread for 1 connection, else 2: wrk must not take more than its share of 2 cores."""
    return 1 if connections <= 1 else 2


def run(url: str, script: Path, *, connections: int, seconds: int) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` with ``connections`` keep-alive connections."""
    command = [
        wrk_binary(),
        f"--threads={threads_for(connections)}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        "--latency",
        f"--timeout={_REQUEST_TIMEOUT_SECONDS}s",
        f"--script={script}",
        url,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + _EXTRA_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {seconds + _EXTRA_SECONDS} s") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return parse(done.stdout)


def _to_ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse(output: str) -> WrkResult:
    """Read wrk's ``--latency`` report (wrk 4.x text format)."""
    percentiles = {int(p): _to_ms(v, u) for p, v, u in _PERCENTILE.findall(output)}
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None or set(percentiles) != {50, 99}:
        raise WrkError(f"cannot read wrk's report:\n{output}")
    non_2xx = _NON_2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests=int(total.group(1)),
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )
