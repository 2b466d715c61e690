"""What a working copy holds when it is extracted: each file's size and sha256.

A working copy is extracted once per version and shared by its instances. Before an instance
starts, :func:`differences` compares the copy with the manifest written at extraction, so the
code that runs is the code that was published: an edited, added or missing file is found and
the copy is extracted again. The manifest lives beside the copy (``<copy>.manifest.json``), out
of the model's sight.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

_CHUNK = 1 << 20


def manifest_path(copy: Path) -> Path:
    return copy.with_name(copy.name + ".manifest.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(tree: Path) -> dict[str, list[object]]:
    """Every file under ``tree`` (relative path -> [size, sha256]); directories are implied."""
    found: dict[str, list[object]] = {}
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            found[path.relative_to(tree).as_posix()] = [path.stat().st_size, _sha256(path)]
    return found


def record(tree: Path, destination: Path) -> None:
    """Write the manifest of ``tree`` to ``destination`` (by rename: never half-written)."""
    staging = destination.with_name(destination.name + ".partial")
    staging.write_text(json.dumps(describe(tree), sort_keys=True))
    os.replace(staging, destination)


def differences(copy: Path, limit: int = 5) -> list[str]:
    """How ``copy`` differs from its manifest, at most ``limit`` files named; empty when it
    matches. A copy without a readable manifest is one difference (it cannot be vouched for)."""
    try:
        expected = json.loads(manifest_path(copy).read_text())
    except (OSError, ValueError):
        return ["no manifest"]
    actual = describe(copy)
    changed = sorted(p for p in expected.keys() & actual.keys() if expected[p] != actual[p])
    missing = sorted(expected.keys() - actual.keys())
    added = sorted(actual.keys() - expected.keys())
    said = [f"changed {p}" for p in changed] + [f"missing {p}" for p in missing]
    said += [f"added {p}" for p in added]
    if len(said) > limit:
        said = [*said[:limit], f"{len(said) - limit} more"]
    return said
