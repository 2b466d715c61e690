"""The floor: the published function alone, called in-process in a loop, nothing else.

No HTTP, no JSON, no process hop: the time no server can beat. It runs in its own process so
that the one-thread BLAS/OpenMP environment is set before numpy loads, exactly as modelhost's
instances and the ceiling get it. ``run.py`` runs it as::

    python -m bench.floor rf

and reads one JSON object from stdout: ``{"case", "calls", "result", "p50_ms", "p99_ms"}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.cases import CASES, SINGLE_THREAD_ENV, Case

_WARMUP_CALLS = 50


def load_function(script: Path, name: str) -> Callable[..., Any]:
    """Import ``script`` by path, as modelhost's worker does, and return its ``name``."""
    spec = importlib.util.spec_from_file_location(script.stem, script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    function: Callable[..., Any] = getattr(module, name)
    return function


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (what wrk's distribution reports)."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def time_calls(function: Callable[..., Any], case: Case, calls: int) -> tuple[Any, list[float]]:
    """Per-call wall times in ms; each call is timed alone so p99 shows the slow ones."""
    args, kwargs = case.arguments()
    result = None
    for _ in range(_WARMUP_CALLS):
        result = case.answer(function(*args, **kwargs))
    clock = time.perf_counter_ns
    times = [0.0] * calls
    for i in range(calls):
        start = clock()
        function(*args, **kwargs)
        times[i] = (clock() - start) / 1e6
    return result, times


def measure(case: Case, calls: int) -> dict[str, Any]:
    """Median and p99 of ``calls`` timed calls of the case's function."""
    for name, value in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(name, value)
    function = load_function(case.script, case.function)
    result, times = time_calls(function, case, calls)
    times.sort()
    return {
        "case": case.name,
        "calls": calls,
        "result": result,
        "p50_ms": percentile(times, 0.50),
        "p99_ms": percentile(times, 0.99),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--calls", type=int, help="Timed calls (default: the case's own).")
    options = parser.parse_args(argv)
    case = CASES[options.case]
    sys.stdout.buffer.write(orjson.dumps(measure(case, options.calls or case.floor_calls)) + b"\n")


if __name__ == "__main__":
    main()
