"""The use cases. The API, the CLI's local commands and the jobs call these; they raise
:mod:`modelhost.errors` and never see HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from modelhost.backends.base import Backend
from modelhost.builder.bundles import BundleStore
from modelhost.crypto import ServerKey
from modelhost.db.repo import Repo, utcnow
from modelhost.gateway.app import Gateway
from modelhost.reconciler import Reconciler
from modelhost.settings import Settings


@dataclass(frozen=True)
class Services:
    """What the operations need, wired once by :func:`modelhost.app.create_app`."""

    settings: Settings
    repo: Repo
    store: BundleStore
    backend: Backend
    gateway: Gateway
    reconciler: Reconciler
    key: ServerKey
    #: What "now" is for schedules; tests pass a fake clock.
    clock: Callable[[], dt.datetime] = utcnow
    #: Asks the run and schedule loop (:mod:`modelhost.jobs.runner`) for a tick now.
    wake_jobs: Callable[[], None] = field(default=lambda: None)

    @property
    def wake(self) -> Callable[[], None]:
        return self.reconciler.wake

    def sync(self) -> None:
        """Wait until the reconciler has seen the changes committed so far (see
        :meth:`Reconciler.sync`)."""
        self.reconciler.sync()


def iso(value: dt.datetime | None) -> str | None:
    """How every view writes a time: ISO 8601 in UTC with a ``Z``."""
    return value.isoformat().replace("+00:00", "Z") if value else None
