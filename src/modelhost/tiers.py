"""Hardware tiers: named amounts of CPU, memory and GPUs an admin defines (setting
``hardware_tiers``) and a model picks (its ``tier``).

The local backend gives an instance its tier's memory as its memory limit and its CPUs as a
cgroup CPU quota, or a CPU affinity (the first N cores) where no cgroup is writable
(:mod:`modelhost.backends.cpu_limit`), and refuses a tier this machine cannot satisfy; the Ray
backend asks Ray for the tier as the actor's ``num_cpus``, ``memory`` and ``num_gpus``, so Ray
places the instance only on a node that has them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelhost import errors

_FIELDS = {"cpus", "memory_mb", "gpus"}


@dataclass(frozen=True)
class Tier:
    name: str
    cpus: float
    memory_mb: int
    gpus: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "memory_mb": self.memory_mb, "gpus": self.gpus}


def parse_tiers(value: Any) -> dict[str, Tier]:
    """Tiers from the settings file's table (``[hardware_tiers.small]``) or from JSON in the
    environment (``{"small": {"cpus": 1, "memory_mb": 2048}}``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError("expected a JSON object of tiers") from None
    if not isinstance(value, Mapping):
        raise ValueError("expected a table of tiers, each with cpus and memory_mb")
    tiers: dict[str, Tier] = {}
    for name, spec in value.items():
        if isinstance(spec, Tier):  # already parsed (Settings.replace)
            tiers[str(name)] = spec
            continue
        if not isinstance(spec, Mapping) or not {"cpus", "memory_mb"} <= set(spec):
            raise ValueError(f"tier {name!r} needs cpus and memory_mb")
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ValueError(f"tier {name!r} has unknown keys {sorted(unknown)}")
        cpus, memory, gpus = spec["cpus"], spec["memory_mb"], spec.get("gpus", 0)
        if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or cpus <= 0:
            raise ValueError(f"tier {name!r}: cpus must be a number above 0")
        if not _finite(cpus):  # nan and inf pass the test above; JSON and TOML have both
            raise ValueError(
                f"tier {name!r}: cpus must be a finite number above 0, such as 1 or 0.5 "
                "(not nan, inf or a number too large for a float)"
            )
        if not isinstance(memory, int) or isinstance(memory, bool) or memory < 1:
            raise ValueError(f"tier {name!r}: memory_mb must be a whole number of at least 1")
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
            raise ValueError(f"tier {name!r}: gpus must be a whole number of at least 0")
        tiers[str(name)] = Tier(str(name), float(cpus), memory, gpus)
    return tiers


def _finite(number: float) -> bool:
    """Whether ``number`` fits in a float and is neither nan nor infinite (JSON allows an
    integer too large for a float, which ``float()`` would refuse with OverflowError)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def find(tiers: Mapping[str, Tier], name: str) -> Tier:
    found = tiers.get(name)
    if found is None:
        if not tiers:
            raise errors.BadRequest(
                f"No hardware tier named '{name}': this server defines none (setting "
                "hardware_tiers); ask its admin to add one, or use no tier."
            )
        known = ", ".join(sorted(tiers))
        raise errors.BadRequest(f"No hardware tier named '{name}'; the tiers are: {known}.")
    return found


def _machine_memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 / 1024)


def check_local(tier: Tier) -> None:
    """Refuse a tier this machine cannot give an instance (the local backend)."""
    cores = len(os.sched_getaffinity(0))
    if math.ceil(tier.cpus) > cores:
        raise errors.BadRequest(
            f"Tier '{tier.name}' needs {tier.cpus:g} CPUs and this machine has {cores}; pick a "
            "smaller tier, or run instances on a Ray cluster (backend = ray)."
        )
    if tier.memory_mb > _machine_memory_mb():
        raise errors.BadRequest(
            f"Tier '{tier.name}' needs {tier.memory_mb} MB of memory and this machine has "
            f"{_machine_memory_mb()} MB; pick a smaller tier."
        )
    if tier.gpus:
        raise errors.BadRequest(
            f"Tier '{tier.name}' needs {tier.gpus} GPU(s), which the local backend cannot give "
            "an instance; run instances on a Ray cluster with GPU nodes (backend = ray)."
        )


def affinity(cpus: float) -> list[int]:
    """The cores a local instance of a tier of ``cpus`` CPUs runs on: the first ``ceil(cpus)``
    this server may use."""
    return sorted(os.sched_getaffinity(0))[: max(1, math.ceil(cpus))]
