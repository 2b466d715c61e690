"""The router: version pools, route tables, and the gateway processes as one interface."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from modelhost.backends.base import Instance, InstanceState
from modelhost.gateway.app import Gateway
from modelhost.gateway.board import LoadBoard
from modelhost.gateway.peers import Peers
from modelhost.gateway.routes import RouteTable
from modelhost.gateway.steering import Steering
from modelhost.serving.router import GatewayFleet, MainProcessOnly, Router
from modelhost.settings import Settings, load_settings
from tests.serving.conftest import make_instance, make_model, make_version


class FakeFleet:
    """Gateway processes that hold the instances named in ``elsewhere``."""

    board: LoadBoard | None = None

    def peers(self) -> Peers | None:
        return None

    def steering(self, slot_for: Callable[[str], int | None]) -> Steering | None:
        return None

    def __init__(
        self, elsewhere: frozenset[str] = frozenset(), board: LoadBoard | None = None
    ) -> None:
        self.board = board
        self.elsewhere = set(elsewhere)
        self.published: list[RouteTable] = []
        self.events: list[tuple[str, str]] = []

    async def start(self, gateway: Gateway, end: Callable[[str, str, str], None]) -> None:
        self.events.append(("start", ""))

    def keeps(self, instance: Instance) -> bool:
        return instance.spec.instance_id not in self.elsewhere

    def leaving(self, instance: Instance) -> None:
        self.events.append(("leaving", instance.spec.instance_id))

    def holder(self, instance_id: str) -> int:
        return 1 if instance_id in self.elsewhere else 0

    async def release(self, instance: Instance, drain_timeout: float) -> None:
        self.events.append(("release", instance.spec.instance_id))

    def forget(self, instance: Instance) -> None:
        self.events.append(("forget", instance.spec.instance_id))

    async def publish(self, table: RouteTable) -> None:
        self.published.append(table)

    async def close(self) -> None:
        self.events.append(("close", ""))


def _settings(tmp_path: Path) -> Settings:
    return load_settings({"home": str(tmp_path), "pipeline_depth": 2}, environ={})


def _router(tmp_path: Path, fleet: GatewayFleet | None = None) -> Router:
    return Router(_settings(tmp_path), Gateway(max_request_bytes=1024), fleet)


def test_without_gateway_processes_the_main_process_holds_every_instance(tmp_path: Path) -> None:
    router = _router(tmp_path)
    assert isinstance(router.processes, MainProcessOnly)
    version = make_version()
    ready, starting = (
        make_instance("a", version),
        make_instance("b", version, InstanceState.STARTING),
    )
    router.rotate(version, [ready, starting])
    pool = router.pool(version.id)
    assert pool is not None
    assert pool.instances() == [ready]
    assert pool.starting == 1
    assert router.holder("a") == 0
    assert router.held_here(ready)


def test_a_pools_capacity_is_the_versions_concurrency_plus_the_calls_sent_ahead(
    tmp_path: Path,
) -> None:
    router = _router(tmp_path)
    router.rotate(make_version(concurrency=3), [])
    first = router.pool("v1")
    assert first is not None
    assert first.capacity == 3 + 2 - 1
    router.rotate(make_version(concurrency=3), [])
    assert router.pool("v1") is first  # unchanged: the same pool
    router.rotate(make_version(concurrency=1), [])
    second = router.pool("v1")
    assert second is not first
    assert second is not None
    assert second.capacity == 2


def test_instances_a_gateway_process_holds_leave_the_main_processs_pool(tmp_path: Path) -> None:
    fleet = FakeFleet(elsewhere={"b"})
    router = _router(tmp_path, fleet)
    version = make_version()
    a, b = make_instance("a", version), make_instance("b", version)
    router.rotate(version, [a, b])
    pool = router.pool(version.id)
    assert pool is not None
    assert pool.instances() == [a]
    assert router.holder("b") == 1
    assert not router.held_here(b)


def test_each_running_version_has_its_own_slot_on_the_load_board_until_it_is_retired(
    tmp_path: Path,
) -> None:
    board = LoadBoard(2)
    router = _router(tmp_path, FakeFleet(board=board))
    one, two = make_version(1), make_version(2)
    router.rotate(one, [make_instance("a", one)])
    router.rotate(two, [make_instance("b", two)])
    first, second = router.pool(one.id), router.pool(two.id)
    assert first is not None
    assert second is not None
    assert first.slot != second.slot
    # The main process's idle instance of version 1 is on the board for the other process.
    assert board.less_busy(first.slot, 1, None) == 0
    # A new pool for the same version (its capacity changed) keeps the version's slot.
    router.rotate(make_version(1, concurrency=2), [make_instance("a", one)])
    replaced = router.pool(one.id)
    assert replaced is not None
    assert replaced is not first
    assert replaced.slot == first.slot
    # Retired, version 1 no longer steers calls and its slot goes to the next version.
    router.retire({}, lambda instance: None)
    assert board.less_busy(first.slot, 1, None) is None
    three = make_version(3)
    router.rotate(three, [])
    third = router.pool(three.id)
    assert third is not None
    assert third.slot in {first.slot, second.slot}


def test_an_instance_that_died_is_taken_out_and_calls_wait_for_its_replacement(
    tmp_path: Path,
) -> None:
    router = _router(tmp_path)
    version = make_version()
    died, stopped = make_instance("a", version), make_instance("b", version)
    router.rotate(version, [died, stopped])
    pool = router.pool(version.id)
    assert pool is not None
    router.take_out(stopped, replaced=False)
    assert pool.starting == 0
    router.take_out(died, replaced=True)
    assert pool.instances() == []
    assert pool.starting == 1


def test_a_route_has_pools_for_running_versions_and_a_status_for_the_others(
    tmp_path: Path,
) -> None:
    router = _router(tmp_path)
    model = make_model(timeout_seconds=None)
    running = make_version(1)
    stopped = make_version(2, desired_state="stopped")
    building = make_version(3, status="building")
    router.rotate(running, [make_instance("a", running)])
    route = router.route(
        model, [running, stopped, building], {"latest": ((1, 100),)}, {1}, (b"digest",)
    )
    assert list(route.pools) == [1]
    assert route.releases[1].number == 1
    assert b'"model_version_number":1' in route.releases[1].json
    assert route.statuses == {2: "stopped", 3: "building"}
    assert route.routes == {"latest": ((1, 100),)}
    assert route.timeout == _settings(tmp_path).timeout_seconds
    assert route.tokens == (b"digest",)
    assert (route.model_id, route.name) == ("m1", "wine")


def test_publishing_swaps_the_table_here_and_sends_it_to_every_gateway_process(
    tmp_path: Path,
) -> None:
    fleet = FakeFleet()
    router = _router(tmp_path, fleet)
    model = make_model()
    route = router.route(model, [], {}, set(), ())
    asyncio.run(router.publish({model.id: route, model.name: route}))
    assert router.find("wine") is route
    assert router.find("m1") is route
    assert router.find("other") is None
    assert fleet.published == [router.gateway.table]


def test_retiring_stops_idle_pools_no_route_wants_and_keeps_busy_ones(tmp_path: Path) -> None:
    router = _router(tmp_path)
    wanted, idle, busy = make_version(1), make_version(2), make_version(3)
    instances = {v.id: make_instance(f"i{v.number}", v) for v in (wanted, idle, busy)}
    for version in (wanted, idle, busy):
        router.rotate(version, [instances[version.id]])
    busy_pool = router.pool(busy.id)
    assert busy_pool is not None
    assert busy_pool.take() is instances[busy.id]  # a call is running on it
    route = router.route(make_model(), [wanted], {}, {1}, ())
    stopped: list[Instance] = []
    kept = router.retire({"m1": route}, stopped.append)
    assert stopped == [instances[idle.id]]
    assert kept == {wanted.id, busy.id}
    assert router.pool(idle.id) is None


def test_the_router_starts_closes_and_tells_the_gateway_processes_about_instances(
    tmp_path: Path,
) -> None:
    fleet = FakeFleet()
    router = _router(tmp_path, fleet)
    instance = make_instance("a", make_version())

    async def lifecycle() -> None:
        await router.start(lambda *_: None)
        router.leaving(instance)
        await router.release(instance, 1.0)
        router.gone(instance)
        await router.close()

    asyncio.run(lifecycle())
    assert fleet.events == [
        ("start", ""),
        ("leaving", "a"),
        ("release", "a"),
        ("forget", "a"),
        ("close", ""),
    ]
