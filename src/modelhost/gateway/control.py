"""What the main server process and its gateway processes say to each other.

Two connections per gateway process, both socketpairs made when it is spawned:

- the **control** stream: one JSON object per line, each way;
- the **hand-over** socket (``SOCK_SEQPACKET``): the main process sends one message per instance
  it hands over, the instance's spec as JSON with the connection to the instance attached
  (``SCM_RIGHTS``).

Main → gateway: ``routes`` (the route table as this gateway serves it; answered with
``applied``), ``release`` (stop using an instance, answered with ``released`` once its calls
are done). Gateway → main: ``metrics`` (the calls it served, each second), ``ended`` (a call
passed its timeout: end that instance).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson

from modelhost import token_limits
from modelhost.gateway.app import TRUSTED
from modelhost.gateway.auth import CHARGED, CHARGED_HEADER
from modelhost.gateway.batching import BatchingPool, limits_of, new_pool
from modelhost.gateway.board import NO_SLOT, LoadBoard
from modelhost.gateway.counters import TokenLimit
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.routes import ModelRoute, Release, RouteTable

#: the largest hand-over message: an instance's spec
HANDOVER_BYTES = 64 * 1024
#: request headers between a gateway process and the main one: the caller's address, and the
#: secret that proves the request came from a gateway process
FORWARDED_FOR = b"x-modelhost-forwarded-for"
GATEWAY_SECRET = b"x-modelhost-gateway"
#: on a call the server makes itself (the tester), passed to another process: no token needed;
#: believed only with the gateway secret, and never taken from a caller (the proxy drops it)
TRUSTED_CALL = b"x-modelhost-trusted-call"


def keep_caller(scope: MutableMapping[str, Any], secret: bytes | None) -> None:
    """A request another of the server's processes passed on, over a private Unix socket (no
    client address of its own), keeps its caller's address: the one in ``FORWARDED_FOR``,
    believed only with the gateway ``secret``; so is ``CHARGED_HEADER``, which says the call
    was counted against its token's limits already, and ``TRUSTED_CALL``, a call the server
    made itself (the tester), which stays trusted as it was where it was made."""
    if scope.get("client") is not None or not secret:
        return
    given = forwarded = charged = None
    trusted = False
    for name, value in scope.get("headers", ()):
        if name == GATEWAY_SECRET:
            given = value
        elif name == FORWARDED_FOR:
            forwarded = value
        elif name == TRUSTED_CALL:
            trusted = True
        elif name == CHARGED_HEADER:
            charged = value
    if given is None or not hmac.compare_digest(given, secret):
        return
    if charged is not None:
        scope[CHARGED] = True
    if forwarded is not None:
        host, _, port = forwarded.decode("latin-1").rpartition(":")
        scope["client"] = (host, int(port) if port.isdigit() else 0)
    if trusted:
        scope[TRUSTED] = True


def encode(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = orjson.loads(line)
    if not isinstance(message, dict) or "type" not in message:
        raise ValueError(f"not a control message: {line[:80]!r}")
    return message


def routes_for(table: RouteTable, instances: dict[str, str]) -> dict[str, Any]:
    """The route table for a gateway process that holds ``instances`` (instance id → version
    id): each model once, with the versions it has instances of."""
    by_version: dict[str, list[str]] = {}
    for instance_id, version_id in instances.items():
        by_version.setdefault(version_id, []).append(instance_id)
    models = []
    for route in _unique(table.by_key.values()):
        versions = [
            {
                "number": number,
                "version_id": pool.version_id,
                "release": route.releases[number].json.decode(),
                "max_queued": pool.max_queued,
                "capacity": pool.capacity,
                "batch": limits_of(pool),
                "concurrency": getattr(pool, "concurrency", 1),
                "slot": pool.slot,
                "instances": sorted(by_version[pool.version_id]),
            }
            for number, pool in route.pools.items()
            if pool.version_id in by_version and number in route.releases
        ]
        models.append(
            {
                "model_id": route.model_id,
                "name": route.name,
                "timeout": route.timeout,
                "routes": {key: [list(t) for t in ts] for key, ts in route.routes.items()},
                "slots": [[number, pool.slot] for number, pool in route.pools.items()],
                "state": route.state,
                "invocation_mode": route.invocation_mode,
                "tokens": [token.hex() for token in route.tokens],
                "limits": [
                    [
                        digest.hex(),
                        limit.slot,
                        limit.name,
                        None if limit.rate is None else str(limit.rate),
                        None if limit.quota is None else str(limit.quota),
                    ]
                    for digest, limit in route.limits.items()
                ],
                "fallbacks": [[new, old] for new, old in route.fallbacks.items()],
                "capture": route.capture,
                "versions": versions,
            }
        )
    return {"models": models}


def table_from(
    data: dict[str, Any],
    pools: dict[str, VersionPool],
    instances: dict[str, Any],
    board: LoadBoard | None = None,
    process: int = 0,
) -> RouteTable:
    """The gateway process's route table from :func:`routes_for`. ``pools`` (version id →
    pool) is kept between tables, so calls waiting in a pool stay there; ``instances`` are the
    instances this process holds, by id. Pools of versions no longer listed are dropped. The
    pools write their idle instances to ``board``, as process number ``process``."""
    by_key: dict[str, ModelRoute] = {}
    wanted: set[str] = set()
    for model in data["models"]:
        route_pools: dict[int, VersionPool] = {}
        releases: dict[int, Release] = {}
        for version in model["versions"]:
            version_id = version["version_id"]
            pool = pools.get(version_id)
            slot = version.get("slot", NO_SLOT)
            batch = version.get("batch")
            limits = (int(batch[0]), float(batch[1])) if batch else None
            if (
                pool is None
                or pool.capacity != version["capacity"]
                or pool.slot != slot
                or (limits_of(pool) is None) != (limits is None)
            ):
                if pool is not None:
                    pool.close()
                pool = pools[version_id] = new_pool(
                    version_id,
                    version["number"],
                    version["max_queued"],
                    version["capacity"],
                    limits,
                    concurrency=int(version.get("concurrency", 1)),
                    board=board,
                    slot=slot,
                    process=process,
                )
            elif isinstance(pool, BatchingPool) and limits is not None:
                pool.tune(*limits)
            listed = {instances[i] for i in version["instances"] if i in instances}
            for instance in pool.instances():
                if instance not in listed:
                    pool.remove(instance)
            for instance in listed:
                pool.add(instance)
            if not pool.ready_count:
                pool.set_starting(0)  # calls waiting here go to the main process instead
                continue
            wanted.add(version_id)
            route_pools[version["number"]] = pool
            releases[version["number"]] = Release(
                model["model_id"], version_id, version["number"], version["release"].encode()
            )
        route = ModelRoute(
            model_id=model["model_id"],
            name=model["name"],
            timeout=model["timeout"],
            routes={k: tuple((n, w) for n, w in v) for k, v in model["routes"].items()},
            pools=route_pools,
            releases=releases,
            state=model["state"],
            invocation_mode=model["invocation_mode"],
            tokens=tuple(bytes.fromhex(t) for t in model["tokens"]),
            limits={
                bytes.fromhex(digest): TokenLimit(
                    slot,
                    name,
                    None if rate is None else token_limits.parse_rate(rate),
                    None if quota is None else token_limits.parse_quota(quota),
                )
                for digest, slot, name, rate, quota in model.get("limits", [])
            },
            fallbacks={new: old for new, old in model.get("fallbacks", [])},
            capture=float(model.get("capture", 0.0)),
            slots={
                number: slot
                for number, slot in model.get("slots", [])
                if number not in route_pools and slot != NO_SLOT
            },
        )
        by_key[route.model_id] = by_key[route.name] = route
    for version_id in list(pools):
        if version_id not in wanted:
            pools.pop(version_id).close()  # calls waiting here are routed again
    return RouteTable(by_key)


def _unique(routes: Iterable[ModelRoute]) -> list[ModelRoute]:
    seen: set[str] = set()
    unique = []
    for route in routes:
        if route.model_id not in seen:
            seen.add(route.model_id)
            unique.append(route)
    return unique
