"""Reads ``mutmut results --all true`` on standard input and prints the score per module:
killed (or timed out) mutants over all mutants, those no selected test reaches ("no tests")
counted as not killed. Exit status 1 when a module is under ``--target`` percent."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict

#: ``    modelhost.planning.x_plan__mutmut_3: survived``
_LINE = re.compile(r"^\s*(?P<name>[\w.]+)__mutmut_\d+: (?P<status>[\w ]+)$")
_KILLED = {"killed", "timeout"}
_NOT_RUN = {"not checked", "skipped"}


def module_of(name: str) -> str:
    """``modelhost.gateway.auth.xǁTokenGuardǁcheck`` -> ``modelhost.gateway.auth``."""
    parts = name.split(".")
    while parts and (parts[-1].startswith(("x_", "xǁ")) or "ǁ" in parts[-1]):
        parts.pop()
    return ".".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=90.0)
    options = parser.parse_args(argv)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: list[str] = []
    for line in sys.stdin:
        match = _LINE.match(line.rstrip("\n"))
        if not match:
            continue
        status = match["status"].strip()
        if status in _NOT_RUN:
            continue
        module = module_of(match["name"])
        counts[module]["killed" if status in _KILLED else "survived"] += 1
        if status not in _KILLED:
            survivors.append(line.strip())
    if not counts:
        print("No mutant results: did mutmut run?", file=sys.stderr)
        return 1
    failing = False
    print(f"{'module':45} {'killed':>7} {'total':>6} {'score':>7}")
    for module in sorted(counts):
        killed, total = counts[module]["killed"], sum(counts[module].values())
        score = 100 * killed / total
        failing |= score < options.target
        print(f"{module:45} {killed:7} {total:6} {score:6.1f}%")
    if survivors:
        print("\nSurvivors (mutmut show NAME):")
        print("\n".join(f"  {s}" for s in survivors))
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
