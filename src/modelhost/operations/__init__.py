"""The use cases. The API, the CLI's local commands and the jobs call these; they raise
:mod:`modelhost.errors` and never see HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from modelhost.backends.base import Instance
from modelhost.builder.bundles import BundleStore
from modelhost.crypto import ServerKey
from modelhost.db.repo import CallMinute, Repo, utcnow
from modelhost.gateway.metrics import Point, VersionSeries
from modelhost.gateway.routes import ModelRoute
from modelhost.sandbox import Sandbox
from modelhost.serving.children import Children
from modelhost.settings import Settings


class Reconciling(Protocol):
    """The reconciler as operations see it (:class:`modelhost.reconciler.Reconciler`)."""

    def wake(self) -> None: ...

    def sync(self, timeout: float = 5.0) -> bool: ...


class Routes(Protocol):
    """The route table as the gateway serves it (:class:`modelhost.serving.router.Router`)."""

    def find(self, key: str) -> ModelRoute | None: ...

    def holder(self, instance_id: str) -> int: ...

    def token_usage(self, token_id: str) -> tuple[int, int] | None: ...


class Metrics(Protocol):
    """Call metrics per version (:class:`modelhost.gateway.metrics.CallMetrics`)."""

    def series(self, model_id: str) -> Sequence[VersionSeries]: ...

    def totals(self, series: VersionSeries, minutes: int) -> Point: ...

    def points(self, series: VersionSeries, minutes: int) -> list[Point]: ...

    def now_minute(self) -> int: ...

    def forget(self, version_ids: Iterable[str]) -> None: ...


class History(Protocol):
    """Per-minute call aggregates kept in the database
    (:class:`modelhost.operations.metrics.CallHistory`)."""

    def read(self, model_id: str, since: int) -> list[CallMinute]: ...

    def now_minute(self) -> int: ...


class Instances(Protocol):
    """The running instances (:class:`modelhost.serving.supervisor.Supervisor`)."""

    def instances(self) -> Sequence[Instance]: ...


class Invoker(Protocol):
    """The gateway's in-process call (:meth:`modelhost.gateway.app.Gateway.call_in_process`)."""

    async def __call__(self, path: str, body: bytes) -> tuple[int, bytes]: ...


async def _no_gateway(path: str, body: bytes) -> tuple[int, bytes]:
    raise RuntimeError("no gateway is wired to these services")


class ServerState:
    """What changes while the server runs, as /health reports it."""

    def __init__(self) -> None:
        #: set when the server was asked to stop: /health says it is no longer ready, so load
        #: balancers take it out while it still answers (setting shutdown_delay_seconds)
        self.draining = False


@dataclass(frozen=True)
class Services:
    """What the operations need, wired once by :func:`modelhost.app.create_app`."""

    settings: Settings
    repo: Repo
    store: BundleStore
    key: ServerKey
    #: what every instance and run starts in (:mod:`modelhost.sandbox`)
    sandbox: Sandbox
    #: the environment and paths of instances and runs
    children: Children
    reconciler: Reconciling
    routes: Routes
    metrics: Metrics
    supervisor: Instances
    #: the calls per minute that survive a restart
    history: History
    #: renders /metrics in the Prometheus text format (:mod:`modelhost.operations.prometheus`)
    scrape: Callable[[], bytes] = field(default=lambda: b"")
    #: What "now" is for schedules; tests pass a fake clock.
    clock: Callable[[], dt.datetime] = utcnow
    #: Asks the run and schedule loop (:mod:`modelhost.jobs.runner`) for a tick now.
    wake_jobs: Callable[[], None] = field(default=lambda: None)
    #: Calls a model from inside the server, as a checked caller (the tester).
    invoke: Invoker = field(default=_no_gateway)
    #: whether the server was asked to stop (its /health then says 503)
    state: ServerState = field(default_factory=lambda: ServerState())
    #: Asks the asynchronous prediction queue (:mod:`modelhost.serving.predictions`) to look now.
    wake_predictions: Callable[[], None] = field(default=lambda: None)
    #: whether this server leads (runs the scheduler, runs and shared writes); always with
    #: one server per database (:mod:`modelhost.db.coordination`)
    leading: Callable[[], bool] = field(default=lambda: True)
    #: tells the other servers on the database that a change was committed
    announce: Callable[[], None] = field(default=lambda: None)

    def wake(self) -> None:
        """A change was committed: wake this server's reconciler, and tell the other servers
        on the database, whose reconcilers then read it within a second."""
        self.reconciler.wake()
        self.announce()

    def sync(self) -> None:
        """Wait until the reconciler has seen the changes committed so far (see
        :meth:`modelhost.reconciler.Reconciler.sync`)."""
        self.reconciler.sync()


def iso(value: dt.datetime | None) -> str | None:
    """How every view writes a time: ISO 8601 in UTC with a ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value else None
