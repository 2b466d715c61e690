"""Several servers on one database: which one leads, and telling the others of a change.

On PostgreSQL any number of servers share the database. One of them, the *leader*, holds a
session advisory lock (:data:`LEADER_LOCK`) on a connection of its own and runs the
singletons: the scheduler and the runs, the recovery of interrupted work, housekeeping and the
reconciler's shared writes (a version's build outcome, health and automatic rollbacks). The
others try for the lock every :data:`POLL_SECONDS`. PostgreSQL lets go of a session lock the
moment the session ends, so when the leader dies (SIGKILL, a lost machine once TCP keepalives
give up on it) another server leads within a poll.

Every server announces a committed change (a route, a token, a label...) with ``NOTIFY`` on
:data:`CHANNEL`, and listens on the same dedicated connection; a note from another server wakes
its reconciler (which reads models, versions, labels and tokens again and rebuilds the route
table) and its run loop. The reconciler's periodic tick is the safety net for a lost note.

SQLite stays one server per database (:mod:`modelhost.db.leases`): :class:`Solo` always leads
and has no one to tell.

>>> coordination = for_engine(engine)  # doctest: +SKIP
>>> coordination.start(on_change=reconciler.wake)  # doctest: +SKIP
>>> coordination.leader  # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from sqlalchemy import Engine, text

logger = logging.getLogger(__name__)

#: the advisory lock the leader holds (an arbitrary 64-bit key, "modelhst" in ASCII)
LEADER_LOCK = 0x6D6F64656C687374
#: the advisory lock migrations run under, one server at a time
MIGRATION_LOCK = LEADER_LOCK + 1
#: the advisory lock of the other start-up writes (the first admin account)
START_LOCK = LEADER_LOCK + 2
#: the advisory lock every running server holds shared (on its dedicated connection), so that
#: a server stopping can tell whether it is the last one (:meth:`PostgresCoordination.alone`)
SERVERS_LOCK = LEADER_LOCK + 3
#: the NOTIFY channel of committed changes
CHANNEL = "modelhost_changes"
#: how often a follower tries for the lead and the leader checks its connection
POLL_SECONDS = 0.5
#: TCP keepalives of the dedicated connection, on both ends: a leader whose machine vanished
#: (no FIN, no RST) loses its session, and so the lock, after about idle + interval * count
#: seconds, and a leader cut off from the database learns it as soon
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
}


class Coordination(Protocol):
    """What the server asks of its peers; :class:`Solo` or :class:`PostgresCoordination`."""

    @property
    def leader(self) -> bool:
        """Whether this server runs the singletons now."""
        ...

    def start(self, on_change: Callable[[], None], on_lead: Callable[[], None]) -> None:
        """Begin: ``on_change`` is called (from another thread) when another server committed
        a change, ``on_lead`` when this server becomes the leader."""
        ...

    def announce(self) -> None:
        """Tell the other servers that a change was committed."""
        ...

    def alone(self) -> bool:
        """Whether no other server runs on this database now (blocks: call it off the event
        loop)."""
        ...

    def stop(self) -> None: ...


class Solo:
    """One server per database (SQLite): always the leader, no one to tell."""

    leader = True

    def start(self, on_change: Callable[[], None], on_lead: Callable[[], None]) -> None:
        on_lead()

    def announce(self) -> None:
        pass

    def alone(self) -> bool:
        return True

    def stop(self) -> None:
        pass


class PostgresCoordination:
    """Leader election with a session advisory lock and change notes with LISTEN/NOTIFY, on
    one dedicated connection owned by a thread of its own (a busy event loop must not cost
    the lead)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: tells this server's own notes from the others'
        self.server_id = secrets.token_hex(8)
        self._leader = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[], None] = lambda: None
        self._on_lead: Callable[[], None] = lambda: None
        self._first = threading.Event()
        self._pending = threading.Event()
        self._sender = threading.Thread(target=self._send, name="announcer", daemon=True)

    @property
    def leader(self) -> bool:
        return self._leader

    def start(self, on_change: Callable[[], None], on_lead: Callable[[], None]) -> None:
        """Start the thread and wait (a few seconds at most) for its first try for the lead,
        so that the first server of a database leads from its first request on."""
        self._on_change, self._on_lead = on_change, on_lead
        self._thread = threading.Thread(target=self._run, name="coordination", daemon=True)
        self._thread.start()
        self._sender.start()
        self._first.wait(5)

    def announce(self) -> None:
        """Never blocks (the event loop may call it): the sender thread sends one ``NOTIFY``
        for all the changes announced since its last."""
        self._pending.set()

    def _send(self) -> None:
        while True:
            self._pending.wait()
            if self._stop.is_set():
                return
            self._pending.clear()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        text("SELECT pg_notify(:channel, :me)"),
                        {"channel": CHANNEL, "me": self.server_id},
                    )
            except Exception as exc:  # the others catch up on their next full refresh
                logger.warning("Could not tell the other servers of a change: %s", exc)

    def alone(self) -> bool:
        """Whether no other server holds :data:`SERVERS_LOCK` (this one holds it once)."""
        try:
            with self.engine.connect() as conn:
                holders = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND classid = :high AND objid = :low AND objsubid = 1 AND granted "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    ),
                    {"high": SERVERS_LOCK >> 32, "low": SERVERS_LOCK & 0xFFFFFFFF},
                ).scalar_one()
        except Exception as exc:  # cannot tell: the others' instances must not be stopped
            logger.warning("Could not tell whether other servers run: %s", exc)
            return False
        return int(holders) <= 1

    def stop(self) -> None:
        self._stop.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._sender.join(timeout=5)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._session()
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1:
                    logger.warning("Lost the coordination connection to the database: %s", exc)
            finally:
                self._lose_lead()
            # While start() still waits for a first try (a connection refused under load,
            # say), try again soon: a server must not start as a follower for a hiccup.
            backoff = failures if self._first.is_set() else 0
            self._stop.wait(min(POLL_SECONDS * 2**backoff, 5.0))

    def _session(self) -> None:
        """One connection, for as long as it works: LISTEN, then try for the lead (or check
        that the lock's session is alive) and hand on notes, every poll."""
        connection = self._connect()
        try:
            # The database's side of the keepalives: it ends the session (and so frees the
            # lock) of a leader whose host vanished, not only the other way round.
            for name in ("idle", "interval", "count"):
                value = _KEEPALIVES[f"keepalives_{name}"]
                connection.execute(f"SET tcp_keepalives_{name} = {value}")
            connection.execute(f"LISTEN {CHANNEL}")
            connection.execute("SELECT pg_advisory_lock_shared(%s)", (SERVERS_LOCK,))
            self._on_change()  # notes may have been missed while not listening
            while not self._stop.is_set():
                if not self._leader:
                    row = connection.execute(
                        "SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)
                    ).fetchone()
                    if row is not None and row[0]:
                        self._leader = True
                        logger.info("This server now leads (scheduler, runs, shared writes).")
                        self._on_lead()
                else:
                    connection.execute("SELECT 1")  # the session, and with it the lock, lives
                self._first.set()
                changed = False
                for note in connection.notifies(timeout=POLL_SECONDS):
                    if note.payload != self.server_id:
                        changed = True
                    if changed:
                        break
                if changed:
                    self._on_change()
        finally:
            connection.close()

    def _connect(self) -> Any:
        """A psycopg connection of its own (not from the pool), in autocommit mode."""
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        params: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "dbname": url.database,
            **_KEEPALIVES,
            **{k: v for k, v in url.query.items() if isinstance(v, str)},
        }
        params.setdefault("connect_timeout", 2)
        return psycopg.connect(
            autocommit=True, **{k: v for k, v in params.items() if v is not None}
        )

    def _lose_lead(self) -> None:
        if self._leader:
            self._leader = False
            logger.warning("This server no longer leads: its database session ended.")


@contextlib.contextmanager
def first_start(engine: Engine) -> Iterator[None]:
    """Hold off other servers' start-up writes meanwhile (the first admin account): servers
    starting together on a fresh PostgreSQL database make it once, not once each."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": START_LOCK})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": START_LOCK})
            conn.commit()


def for_engine(engine: Engine) -> Coordination:
    """:class:`PostgresCoordination` on PostgreSQL, :class:`Solo` otherwise."""
    if engine.dialect.name == "postgresql":
        return PostgresCoordination(engine)
    return Solo()
