"""The router: each running version's pool of ready instances, and the route table.

The route table is built whole each reconcile tick and swapped into the main process's gateway,
then published to the gateway processes (setting ``gateway_processes``). Which process sends an
instance its calls is the :class:`GatewayFleet`'s business: with gateway processes it is
:class:`~modelhost.gateway.process_parent.GatewayProcesses`; with none it is
:class:`MainProcessOnly`, the case of one process, so the router has no special case for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from modelhost.backends.base import Instance, InstanceState
from modelhost.db.repo import Model, Version
from modelhost.gateway.app import Gateway
from modelhost.gateway.batching import BatchingPool, batch_capacity, new_pool
from modelhost.gateway.board import NO_SLOT, LoadBoard
from modelhost.gateway.counters import TokenLimit
from modelhost.gateway.envelope import release_json
from modelhost.gateway.peers import Peers
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.routes import ModelRoute, Release, RouteTable
from modelhost.gateway.steering import Steering
from modelhost.planning import Targets
from modelhost.serving.quotas import TokenQuotas
from modelhost.settings import Settings


class GatewayFleet(Protocol):
    """The processes that answer invocation URLs, seen from the main process."""

    @property
    def board(self) -> LoadBoard | None:
        """Every process's idle instances of each version (None: one process)."""

    def peers(self) -> Peers | None:
        """The other processes, for the main process to pass calls to (None: there are none)."""

    def steering(self, slot_for: Callable[[str], int | None]) -> Steering | None:
        """Where the main process moves a new connection to (None: one process)."""

    async def start(self, gateway: Gateway, end: Callable[[str, str, str], None]) -> None:
        """Start them, their metrics and request log rows going to ``gateway``;
        ``end(instance id, reason, message)`` ends an instance."""

    def keeps(self, instance: Instance) -> bool:
        """Whether the main process sends ``instance`` its calls (else a gateway process)."""

    def leaving(self, instance: Instance) -> None:
        """``instance`` is about to stop: share out its version's next ones without it."""

    def holder(self, instance_id: str) -> int:
        """The process that sends the instance calls: 0 the main one, else a gateway process."""

    async def release(self, instance: Instance, drain_timeout: float) -> None:
        """Before ``instance`` stops: its process lets its calls finish and lets go."""

    def forget(self, instance: Instance) -> None:
        """``instance`` is gone (it exited): nothing to release."""

    async def publish(self, table: RouteTable) -> None:
        """Send each gateway process the table, and wait until it applied it."""

    async def close(self) -> None:
        """Stop them (before the instances stop)."""


class MainProcessOnly:
    """No gateway processes: the main process sends every instance its calls."""

    board: LoadBoard | None = None

    def peers(self) -> Peers | None:
        return None

    def steering(self, slot_for: Callable[[str], int | None]) -> Steering | None:
        return None

    async def start(self, gateway: Gateway, end: Callable[[str, str, str], None]) -> None:
        pass

    def keeps(self, instance: Instance) -> bool:
        return True

    def leaving(self, instance: Instance) -> None:
        pass

    def holder(self, instance_id: str) -> int:
        return 0

    async def release(self, instance: Instance, drain_timeout: float) -> None:
        pass

    def forget(self, instance: Instance) -> None:
        pass

    async def publish(self, table: RouteTable) -> None:
        pass

    async def close(self) -> None:
        pass


class Router:
    def __init__(
        self, settings: Settings, gateway: Gateway, processes: GatewayFleet | None = None
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.processes: GatewayFleet = processes if processes is not None else MainProcessOnly()
        self._pools: dict[str, VersionPool] = {}  # version id -> its pool
        #: limited tokens' slots of the counters every gateway process shares
        self.quotas = TokenQuotas(gateway.guard.counters)

    # ------------------------------------------------------------------ what operations see

    def find(self, key: str) -> ModelRoute | None:
        """A model's route (by id or name) as the gateway serves it now."""
        return self.gateway.table.find(key)

    def holder(self, instance_id: str) -> int:
        """The process that sends the instance calls: 0 the main one, 1… a gateway process."""
        return self.processes.holder(instance_id)

    def token_usage(self, token_id: str) -> tuple[int, int] | None:
        """A limited token's quota window key and calls used in it, as the gateway counts them
        now; None when the token has no limits (or was created since the last tick)."""
        return self.quotas.usage(token_id)

    # ------------------------------------------------------------------ gateway processes

    async def start(self, end: Callable[[str, str, str], None]) -> None:
        """Start the gateway processes (first, so the first instances are spread over them)."""
        self.gateway.peers = self.processes.peers()
        self.gateway.steering = self.processes.steering(self.gateway.slot_for)
        await self.processes.start(self.gateway, end)

    async def close(self) -> None:
        await self.processes.close()
        if self.gateway.steering is not None:
            self.gateway.steering.close()
        if self.gateway.peers is not None:
            await self.gateway.peers.close()

    def held_here(self, instance: Instance) -> bool:
        """Whether the main process sends the instance its calls (not a gateway process)."""
        return self.processes.holder(instance.spec.instance_id) == 0

    # ------------------------------------------------------------------ pools

    def pool(self, version_id: str) -> VersionPool | None:
        return self._pools.get(version_id)

    def rotate(self, version: Version, live: Sequence[Instance]) -> None:
        """Put a ready version's ready instances in its pool (those a gateway process holds
        leave it: that process sends them calls), and count the ones starting."""
        pool = self._pools.get(version.id)
        batch = batch_limits(version)
        capacity = (
            version.concurrency + self.settings.pipeline_depth - 1
            if batch is None
            else batch_capacity(version.concurrency)
        )
        if pool is None or pool.capacity != capacity:
            board = self.processes.board
            if pool is not None:  # the new pool takes its slot on the board
                slot, pool.board = pool.slot, None
            else:
                slot = board.slot() if board is not None else NO_SLOT
            pool = self._pools[version.id] = new_pool(
                version.id,
                version.number,
                self.settings.max_queued_requests,
                capacity,
                batch,
                concurrency=version.concurrency,
                board=board,
                slot=slot,
            )
        elif isinstance(pool, BatchingPool) and batch is not None:
            pool.tune(*batch)
        for instance in live:
            if instance.state is not InstanceState.READY:
                continue
            if self.processes.keeps(instance):
                pool.add(instance)
            else:  # a gateway process sends it calls
                pool.remove(instance)
        pool.set_starting(sum(i.state is InstanceState.STARTING for i in live))

    def take_out(self, instance: Instance, *, replaced: bool) -> None:
        """Take an instance out of rotation; when it died (``replaced``), calls wait for the
        instance that replaces it instead of failing at once."""
        pool = self._pools.get(instance.spec.version_id)
        if pool is not None:
            pool.remove(instance)
            if replaced:
                pool.expect_replacement()

    def leaving(self, instance: Instance) -> None:
        self.processes.leaving(instance)

    async def release(self, instance: Instance, drain_timeout: float) -> None:
        await self.processes.release(instance, drain_timeout)

    def gone(self, instance: Instance) -> None:
        self.processes.forget(instance)

    def retire(self, table: Mapping[str, ModelRoute], stop: Callable[[Instance], None]) -> set[str]:
        """Drop the pools of versions no route wants once their calls are done, stopping
        their instances with ``stop``; calls still waiting in them are routed again. Returns
        the versions that still have a pool."""
        wanted = {pool.version_id for route in table.values() for pool in route.pools.values()}
        for version_id, pool in list(self._pools.items()):
            if version_id in wanted:
                continue
            pool.close()  # calls waiting here are routed again, by the new table
            if pool.busy:
                continue  # calls still running: next tick
            for instance in pool.instances():
                stop(instance)
            del self._pools[version_id]
            if self.processes.board is not None:
                self.processes.board.free(pool.slot)
        return wanted | set(self._pools)

    # ------------------------------------------------------------------ route table

    def route(
        self,
        model: Model,
        versions: Iterable[Version],
        routes: Mapping[str, Targets],
        running: set[int],
        tokens: tuple[bytes, ...],
        fallbacks: Mapping[int, int] | None = None,
        limits: Mapping[bytes, TokenLimit] | None = None,
    ) -> ModelRoute:
        """A model's route: its routes, the pools of its running versions, and a status for
        each of the others (for precise 404 and 503 messages)."""
        pools: dict[int, VersionPool] = {}
        releases: dict[int, Release] = {}
        statuses: dict[int, str] = {}
        for version in versions:
            pool = self._pools.get(version.id)
            if version.number in running and pool is not None:
                pools[version.number] = pool
                releases[version.number] = _release(model, version)
            elif version.desired_state == "stopped" and version.status == "ready":
                statuses[version.number] = "stopped"
            else:
                statuses[version.number] = version.status
        return ModelRoute(
            model_id=model.id,
            name=model.name,
            timeout=model.timeout_seconds or self.settings.timeout_seconds,
            routes=dict(routes),
            pools=pools,
            releases=releases,
            statuses=statuses,
            state=model.state,
            invocation_mode=model.invocation_mode,
            tokens=tokens,
            limits=dict(limits or {}),
            fallbacks={
                new: old for new, old in (fallbacks or {}).items() if new in pools and old in pools
            },
            capture=model.capture_share if model.capture else 0.0,
        )

    async def publish(self, table: Mapping[str, ModelRoute]) -> None:
        """Swap the table into this process's gateway, then into every gateway process."""
        self.gateway.table = RouteTable(dict(table))
        await self.processes.publish(self.gateway.table)


def _release(model: Model, version: Version) -> Release:
    body = release_json(model.id, version.id, version.number)
    return Release(model.id, version.id, version.number, body)


def batch_limits(version: Version) -> tuple[int, float] | None:
    """A batching version's largest batch and longest wait (ms); None for any other."""
    if version.batch_max_size is None:
        return None
    return version.batch_max_size, version.batch_max_wait_ms or 0.0
