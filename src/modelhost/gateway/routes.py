"""The route table: what each invocation URL resolves to, swapped whole by the reconciler."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelhost.gateway.pool import VersionPool


@dataclass(frozen=True)
class Release:
    """What a response says about the version that answered, pre-encoded once."""

    model_id: str
    version_id: str
    number: int
    json: bytes


@dataclass(frozen=True)
class ModelRoute:
    model_id: str
    name: str
    timeout: float
    latest: int | None
    pools: dict[int, VersionPool] = field(default_factory=dict)
    releases: dict[int, Release] = field(default_factory=dict)
    #: version number -> status for versions without a pool, for precise 404/503 messages
    statuses: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteTable:
    by_key: dict[str, ModelRoute] = field(default_factory=dict)

    def find(self, key: str) -> ModelRoute | None:
        return self.by_key.get(key)
