"""Route switches: where each model's routes point, and what they pointed at just before.

When a route moves, the versions it left keep running for ``switch_hold_seconds`` (calls in
flight finish, and a quick way back stays warm). During that hold the versions that took the
route are watched: one that crashes on its first calls, or whose calls fail (5xx) at more than
``rollback_error_rate`` of at least ``rollback_min_calls``, is marked failed with the reason and
the route goes back to what it was. Each such rollback is logged and audited (actor
``modelhost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import orjson

from modelhost import events
from modelhost.db.repo import BuildFailure, Model, Repo, Version, failure_values
from modelhost.planning import LABEL_PREFIX, Plan, Targets

logger = logging.getLogger(__name__)

#: (calls, failed calls) a version has answered so far, by version id
Counts = Callable[[str], tuple[int, int]]


@dataclass
class _Switch:
    """A route that just moved: the old targets stay running until the hold ends."""

    previous: Targets
    until: float
    #: the calls and failures of each new target (by number) when the route moved
    baseline: dict[int, tuple[int, int]] = field(default_factory=dict)


class Switches:
    def __init__(
        self,
        repo: Repo,
        hold_seconds: float,
        *,
        counts: Counts = lambda _version_id: (0, 0),
        error_rate: float = 1.0,
        min_calls: int = 20,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.repo = repo
        #: only the leader rolls a route back (several servers on one database)
        self.leading = leading
        self.hold_seconds = hold_seconds
        self.counts = counts
        self.error_rate = error_rate
        self.min_calls = min_calls
        self._routes: dict[str, dict[str, Targets]] = defaultdict(dict)  # model id -> routes
        self._switches: dict[tuple[str, str], _Switch] = {}  # (model id, route) -> switch

    def routes(self, model_id: str) -> dict[str, Targets]:
        """A model's routes as of the last tick."""
        return self._routes[model_id]

    def apply(
        self, model: Model, new: Plan, by_number: Mapping[int, Version] | None = None
    ) -> None:
        """Take the plan's routes, noting each route that moved and how its new targets have
        answered so far (``by_number`` finds their ids)."""
        for key, targets in new.routes.items():
            before = self._routes[model.id].get(key)
            if before is not None and before != targets:
                baseline = {
                    number: self.counts(version.id)
                    for number, _ in targets
                    if (version := (by_number or {}).get(number)) is not None
                }
                self._switches[(model.id, key)] = _Switch(
                    before, time.monotonic() + self.hold_seconds, baseline
                )
        self._routes[model.id] = dict(new.routes)

    def held(self, model_id: str) -> set[int]:
        """The versions a model's routes left less than the hold ago: they keep running."""
        now = time.monotonic()
        held: set[int] = set()
        for (owner, key), switch in list(self._switches.items()):
            if switch.until < now:
                del self._switches[(owner, key)]
            elif owner == model_id:
                held |= {n for n, _ in switch.previous}
        return held

    def fallbacks(self, model_id: str) -> dict[int, int]:
        """For each version that took a route less than the hold ago, the version the route
        left (its main target), which answers calls that crash on the new one."""
        found: dict[int, int] = {}
        for (owner, key), switch in self._switches.items():
            if owner != model_id or not switch.previous:
                continue
            before = switch.previous[0][0]
            for number, _ in self._routes[model_id].get(key, ()):
                if number not in {n for n, _ in switch.previous}:
                    found.setdefault(number, before)
        return found

    async def roll_back_failing(
        self, model: Model, by_number: Mapping[int, Version], crashed: Callable[[str], bool]
    ) -> bool:
        """A version that crashes, or fails too many calls, right after going live loses the
        route it took. True when a route went back: the model and its versions changed in the
        database, so the caller reads them again before it plans.

        ``crashed(version id)`` says whether one of the version's instances crashed this tick.
        """
        rolled_back = False
        if not self.leading():
            return False
        for (owner, key), switch in list(self._switches.items()):
            if owner != model.id:
                continue
            current = self._routes[model.id].get(key, ())
            previous = {n for n, _ in switch.previous}
            for number, _ in current:
                version = by_number.get(number)
                if number in previous or version is None:
                    continue
                reason = self._failing(switch, number, version, crashed)
                if reason is None:
                    continue
                back = ", ".join(str(n) for n in sorted(previous))
                reason += f" after taking route '{key}'; the route went back to version(s) {back}."
                await self._send_back(model, key, switch, version, reason)
                del self._switches[(owner, key)]
                rolled_back = True
                break
        return rolled_back

    def _failing(
        self, switch: _Switch, number: int, version: Version, crashed: Callable[[str], bool]
    ) -> str | None:
        if crashed(version.id):
            return "Crashed on its first calls"
        calls_then, failed_then = switch.baseline.get(number, (0, 0))
        calls, failed = self.counts(version.id)
        calls, failed = calls - calls_then, failed - failed_then
        if calls >= self.min_calls and failed > self.error_rate * calls:
            return (
                f"Failed {failed} of its first {calls} calls (more than "
                f"{self.error_rate:.0%}, setting rollback_error_rate)"
            )
        return None

    async def _send_back(
        self, model: Model, key: str, switch: _Switch, version: Version, reason: str
    ) -> None:
        """Mark ``version`` failed with ``reason``, put route ``key`` back as it was (the
        deployed version or the label too), and say so in the log and the audit log."""
        previous = {n for n, _ in switch.previous}
        kind = "crash" if reason.startswith("Crashed") else "errors"
        await asyncio.to_thread(
            self.repo.update_version,
            version.id,
            status="failed",
            build_log=version.build_log + reason + "\n",
            **failure_values(BuildFailure(kind, reason)),
        )
        if model.deployed_version == version.number:
            await asyncio.to_thread(
                self.repo.update_model, model.id, deployed_version=max(previous)
            )
        if key.startswith(LABEL_PREFIX):  # the label goes back to what it was
            (main, _), *canary = switch.previous
            await asyncio.to_thread(
                self.repo.set_label,
                model.id,
                key[len(LABEL_PREFIX) :],
                main,
                canary[0][0] if canary else None,
                canary[0][1] if canary else 0,
            )
        self._routes[model.id][key] = switch.previous
        logger.warning("%s version %s rolled back: %s", model.name, version.number, reason)
        await asyncio.to_thread(
            events.write,
            self.repo,
            events.ROLLBACK,
            actor_id=None,
            actor="modelhost",
            model_id=model.id,
            model=model.name,
            version=version.number,
            source_ip=None,
            outcome="success",
            request_id=None,
            detail=orjson.dumps({"automatic": True, "route": key, "reason": reason}).decode(),
        )
