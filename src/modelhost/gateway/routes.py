"""The route table: what each invocation URL resolves to, swapped whole by the reconciler."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from modelhost.gateway.counters import TokenLimit
from modelhost.gateway.pool import VersionPool


@dataclass(frozen=True)
class Release:
    """What a response says about the version that answered, pre-encoded once."""

    model_id: str
    version_id: str
    number: int
    json: bytes

    @functools.cached_property
    def number_header(self) -> bytes:
        """The version number as the ``X-Model-Version`` header's value."""
        return str(self.number).encode()


@dataclass(frozen=True)
class ModelRoute:
    model_id: str
    name: str
    timeout: float
    #: route key ("latest", "label/prod") -> ((version number, weight), ...)
    routes: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    #: running versions by number
    pools: dict[int, VersionPool] = field(default_factory=dict)
    releases: dict[int, Release] = field(default_factory=dict)
    #: version number -> status for versions without a pool, for precise 404/503 messages
    statuses: dict[int, str] = field(default_factory=dict)
    #: "stopped" or "archived" when the whole model is not serving
    state: str = "running"
    #: "token" (callers need one of ``tokens``) or "public"
    invocation_mode: str = "token"
    #: sha256 digests of the model's active access tokens
    tokens: tuple[bytes, ...] = ()
    #: digest -> rate and quota, for those of ``tokens`` that have one (empty: no limits)
    limits: dict[bytes, TokenLimit] = field(default_factory=dict)
    #: during a switch hold: a version that just took a route -> the one it took it from, still
    #: warm, which answers a call the new version's instance crashed on
    fallbacks: dict[int, int] = field(default_factory=dict)
    #: the share of successful calls captured (:mod:`modelhost.gateway.capture`); 0.0: off
    capture: float = 0.0
    #: in a gateway process: the load board slots of running versions it holds no instance
    #: of, by number (where :mod:`modelhost.gateway.steering` sends their connections)
    slots: dict[int, int] = field(default_factory=dict)

    def pick(self, key: str) -> int | None:
        """The version number a route sends this call to (weighted for a canary)."""
        targets = self.routes.get(key)
        if not targets:
            return None
        if len(targets) == 1:
            return targets[0][0]
        point = random.uniform(0, sum(weight for _, weight in targets))
        for number, weight in targets:
            point -= weight
            if point <= 0:
                return number
        return targets[-1][0]


@dataclass(frozen=True)
class RouteTable:
    by_key: dict[str, ModelRoute] = field(default_factory=dict)

    def find(self, key: str) -> ModelRoute | None:
        return self.by_key.get(key)
