"""The reconciler: compares desired state (database) with actual state (backend), forever.

Each tick it records what instances reported (a build passed or failed, an instance died),
plans every model (:mod:`modelhost.planning`), starts and stops instances to match, and hands
the gateway a fresh route table. Switches are zero-downtime: new instances start, a route
moves only once they are all ready, and old instances leave rotation and finish their calls
before they stop. It never dies on an exception: it logs it and tries again next tick.

The work is done by its parts (:mod:`modelhost.serving`): the
:class:`~modelhost.serving.supervisor.Supervisor` (instances), the
:class:`~modelhost.serving.router.Router` (pools and route tables), the
:class:`~modelhost.serving.switches.Switches` (where routes point and pointed) and the
:class:`~modelhost.serving.denials.DenialLog`. This module drives them, one tick at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from modelhost.backends.base import Backend
from modelhost.builder.builds import EnvironmentBuilds
from modelhost.builder.bundles import BundleStore
from modelhost.db.repo import Label, Model, Repo, Token, Version
from modelhost.gateway.app import Gateway
from modelhost.gateway.routes import ModelRoute
from modelhost.planning import plan
from modelhost.serving.children import Children
from modelhost.serving.denials import DenialLog
from modelhost.serving.router import GatewayFleet, Router
from modelhost.serving.supervisor import Supervisor
from modelhost.serving.switches import Switches
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

_Snapshot = tuple[
    list[Model],
    dict[str, list[Version]],
    dict[str, list[Label]],
    dict[str, tuple[bytes, ...]],
    list[Token],
]


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repo,
        backend: Backend,
        gateway: Gateway,
        store: BundleStore,
        children: Children,
        gateways: GatewayFleet | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.gateway = gateway
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        #: ticks begun and ended, for ``sync``: a thread waits on it for a tick to end
        self._ticks = threading.Condition()
        self._begun = 0
        self._ended = 0
        self.builds = EnvironmentBuilds(
            settings=settings,
            repo=repo,
            store=store,
            workdir=lambda version: children.instance_workdir(version.id),
            wake=self.wake,
            leading=leading,
        )
        self.router = Router(settings, gateway, gateways)
        self.supervisor = Supervisor(
            settings=settings,
            repo=repo,
            backend=backend,
            store=store,
            builds=self.builds,
            children=children,
            router=self.router,
            leading=leading,
        )
        self.switches = Switches(
            repo,
            settings.switch_hold_seconds,
            counts=gateway.metrics.count,
            error_rate=settings.rollback_error_rate,
            min_calls=settings.rollback_min_calls,
            leading=leading,
        )
        self.denials = DenialLog(repo)
        #: when quota usage is next written to the database (time.monotonic)
        self._flush_due = 0.0
        backend.set_listener(self.wake)

    # ------------------------------------------------------------------ driving

    def wake(self) -> None:
        """Ask for a tick now (a change was made, an instance changed state).

        Safe to call from any thread: API routes run in a thread pool.
        """
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        failures = FailureLog(logger)
        while True:
            try:
                await self.reconcile_once()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.worked()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval_seconds)
            self._wake.clear()

    def sync(self, timeout: float = 5.0) -> bool:
        """Wake the reconciler and wait (up to ``timeout``) for a tick that began after this
        call to end, so that a change just committed is in the route table when an API call
        returns: a token works, a revoked one stops working, a stopped model answers 503.

        Called from a worker thread (API routes run in a thread pool). On the event loop's own
        thread, or before the loop runs, it only wakes: waiting there would block the tick.
        """
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self.wake()
            return False
        with self._ticks:
            target = self._begun + 1
        self.wake()
        with self._ticks:
            return self._ticks.wait_for(lambda: self._ended >= target, timeout)

    async def reconcile_once(self) -> None:
        async with self._lock:
            with self._ticks:
                self._begun += 1
            try:
                await self._reconcile()
            finally:
                with self._ticks:
                    self._ended += 1
                    self._ticks.notify_all()

    async def start(self) -> None:
        """Start the gateway processes, if any: before the first tick, so that the first
        instances are spread over them."""
        await self.router.start(self.supervisor.end_instance)

    async def close(self) -> None:
        """Stop the gateway processes (if any), then the builds and the instances; then write
        the last quota usage, counted by all of them."""
        await self.router.close()
        await self.supervisor.close()
        try:
            await self.flush_usage()
        except Exception:
            logger.exception("writing the quota usage failed; the last calls are not counted")

    # ------------------------------------------------------------------ one tick

    async def _reconcile(self) -> None:
        supervisor, switches = self.supervisor, self.switches
        await supervisor.record_outcomes()
        models, versions, labels, tokens, active = await asyncio.to_thread(self._snapshot)
        limits = self.router.quotas.limits(active)
        supervisor.check_memory()
        table: dict[str, ModelRoute] = {}
        converged: set[str] = set()
        for model in models:
            model_versions = versions.get(model.id, [])
            by_number = {v.number: v for v in model_versions}
            if await switches.roll_back_failing(model, by_number, supervisor.crashed):
                # the version is failed and the deployed version or label moved back: plan
                # with what the database now says, not this tick's snapshot
                model, model_versions, model_labels = await asyncio.to_thread(
                    self._model_again, model
                )
                labels[model.id] = model_labels
                by_number = {v.number: v for v in model_versions}
            model_plan = plan(
                model,
                model_versions,
                labels.get(model.id, []),
                switches.routes(model.id),
                lambda n, m=model, vs=by_number: supervisor.fully_ready(m, vs[n]),  # type: ignore[misc]
            )
            switches.apply(model, model_plan, by_number)
            keep = set(model_plan.run) | switches.held(model.id)
            for version in model_versions:
                if version.number in model_plan.build or version.number in keep:
                    converged.add(version.id)
                    await supervisor.converge(model, version)
            route = self.router.route(
                model,
                model_versions,
                model_plan.routes,
                keep,
                tokens.get(model.id, ()),
                switches.fallbacks(model.id),
                limits.get(model.id),
            )
            table[model.id] = table[model.name] = route
        await self.router.publish(table)
        pooled = self.router.retire(table, supervisor.stop)
        supervisor.stop_strays(pooled | converged)
        supervisor.end_tick()
        if self.gateway.guard.denials:
            await asyncio.to_thread(self.denials.drain, self.gateway.guard.denials)
        if time.monotonic() >= self._flush_due:
            await self.flush_usage()

    async def flush_usage(self) -> None:
        """Write the quota usage that changed to the database (in a thread: the gateway goes
        on counting meanwhile)."""
        self._flush_due = time.monotonic() + self.settings.quota_flush_seconds
        rows = self.router.quotas.changed()
        if not rows:
            return
        try:
            await asyncio.to_thread(self.repo.save_token_usage, rows)
        except Exception:
            self.router.quotas.unsaved(rows)
            raise

    def _model_again(self, model: Model) -> tuple[Model, list[Version], list[Label]]:
        again = self.repo.find_model(model.id) or model
        return again, self.repo.list_versions(model.id), self.repo.list_labels(model.id)

    def _snapshot(self) -> _Snapshot:
        models = self.repo.list_models()
        tokens: dict[str, tuple[bytes, ...]] = defaultdict(tuple)
        active = self.repo.list_tokens(active=True)
        for token in active:
            tokens[token.model_id] += (bytes.fromhex(token.token_hash),)
        versions: dict[str, list[Version]] = defaultdict(list)
        for version in self.repo.list_all_versions():
            versions[version.model_id].append(version)
        labels: dict[str, list[Label]] = defaultdict(list)
        for label in self.repo.list_labels():
            labels[label.model_id].append(label)
        return models, versions, labels, tokens, active


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class FailureLog:
    """How the reconcile loop reports failing ticks: the first failure with its traceback, the
    same failure again (a database that is down fails every tick) as one line a minute at most,
    and the recovery once, so an outage does not bury the log in identical tracebacks."""

    def __init__(
        self, log: logging.Logger, clock: Callable[[], float] = time.monotonic, every: float = 60
    ) -> None:
        self._log = log
        self._clock = clock
        self._every = every
        self._last: str | None = None
        self._count = 0
        self._said_at = 0.0

    def failed(self, exc: BaseException) -> None:
        described = f"{type(exc).__name__}: {exc}"
        self._count += 1
        now = self._clock()
        if described != self._last:
            self._last = described
            self._said_at = now
            self._log.error("reconcile tick failed; trying again on the next one", exc_info=exc)
        elif now - self._said_at >= self._every:
            self._said_at = now
            self._log.error("reconcile ticks still fail (%d in a row): %s", self._count, described)

    def worked(self) -> None:
        if self._count:
            self._log.warning("reconcile ticks work again after %d failed", self._count)
        self._last = None
        self._count = 0
