"""One server per SQLite database (several servers share a PostgreSQL one:
:mod:`modelhost.db.coordination`).

Two servers on one SQLite database would both run every schedule and fail each other's runs,
and SQLite has no advisory locks or notifications to coordinate them. So a server holds a
lease, one row it renews every :data:`RENEW_SECONDS`; another server finds the row fresh and
refuses to start, naming the holder. A lease not renewed for :data:`EXPIRES_SECONDS` (its
server was killed, or its machine went away) is taken over. A server restarted on the same
data directory and machine takes its own lease over at once: the data directory's lock
already says the old one is gone.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select, update

from modelhost import errors
from modelhost.db.base import _aware, utcnow
from modelhost.db.tables import server_leases

logger = logging.getLogger(__name__)

LEASE_ID = "server"
RENEW_SECONDS = 5.0
EXPIRES_SECONDS = 20.0


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    home: str
    url: str

    @classmethod
    def this_process(cls, home: Path, url: str, pid: int | None = None) -> Holder:
        """This server, known by ``pid`` (the process to stop: the arbiter's) or this one's."""
        return cls(socket.gethostname(), pid or os.getpid(), str(home.resolve()), url)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, serving {self.url} from {self.home}"


def claim(engine: Engine, holder: Holder, *, now: dt.datetime | None = None) -> None:
    """Take the lease, or raise :class:`errors.Conflict` naming the server that holds it."""
    now = now or utcnow()
    values = {**holder.__dict__, "started_at": now, "heartbeat_at": now}
    with engine.begin() as conn:
        query = select(server_leases).where(server_leases.c.id == LEASE_ID)
        if engine.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            conn.execute(insert(server_leases).values(id=LEASE_ID, **values))
            return
        ours = row.host == holder.host and row.home == holder.home
        seen = _aware(row.heartbeat_at)
        assert seen is not None
        age = (now - seen).total_seconds()
        if not ours and age < EXPIRES_SECONDS:
            other = Holder(row.host, row.pid, row.home, row.url)
            raise errors.Conflict(
                f"Another modelhost server uses this database ({other.describe()}; last seen "
                f"{max(age, 0):.0f} s ago). Stop it first, or give this server a database of "
                "its own (setting database_url): only one server may use a SQLite database; "
                "for several servers, use PostgreSQL (see docs/scaling.md)."
            )
        if not ours:
            logger.warning(
                "Taking over the database from a server not seen for %.0f s (pid %s on %s).",
                age,
                row.pid,
                row.host,
            )
        conn.execute(update(server_leases).where(server_leases.c.id == LEASE_ID).values(values))


def renew(engine: Engine, holder: Holder, *, now: dt.datetime | None = None) -> bool:
    """Refresh the heartbeat; False when the lease is no longer this server's."""
    with engine.begin() as conn:
        done = conn.execute(
            update(server_leases)
            .where(server_leases.c.id == LEASE_ID)
            .where(server_leases.c.host == holder.host)
            .where(server_leases.c.pid == holder.pid)
            .values(heartbeat_at=now or utcnow())
        )
    return bool(done.rowcount)


def release(engine: Engine, holder: Holder) -> None:
    with engine.begin() as conn:
        conn.execute(
            delete(server_leases)
            .where(server_leases.c.id == LEASE_ID)
            .where(server_leases.c.host == holder.host)
            .where(server_leases.c.pid == holder.pid)
        )


class Heartbeat:
    """Renews the lease from a thread of its own while the server runs (a busy event loop or
    an unreachable database for a while must not cost the lease), and releases it at the end."""

    def __init__(self, engine: Engine, holder: Holder) -> None:
        self.engine = engine
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                if not renew(self.engine, self.holder):
                    logger.error("This server's database lease was taken over by another server.")
            except Exception as exc:  # the database is away for now: try again next time
                logger.warning("Could not renew the database lease: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            release(self.engine, self.holder)
        except Exception as exc:
            logger.warning("Could not release the database lease: %s", exc)
