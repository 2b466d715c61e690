"""The repository's machinery: an engine, shared transactions, rows as dataclasses."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import Connection, Engine


def new_id() -> str:
    """A 24-character hex id, the shape hosted model APIs use."""
    return secrets.token_hex(12)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def _row(cls: type, row: Any) -> Any:
    values = dict(row._mapping)
    for key, value in values.items():
        if isinstance(value, dt.datetime):
            values[key] = _aware(value)
    return cls(**values)


_active: ContextVar[Connection | None] = ContextVar("modelhost_transaction", default=None)


class Store:
    """The engine and transactions every repository method runs in.

    Each method runs in its own transaction, unless called inside :meth:`transaction`, where
    they all share one: an action and its audit event commit together or not at all.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if _active.get() is not None:
            yield
            return
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                # pysqlite begins a transaction only before its first write, so a savepoint
                # taken before that (a version's number) would be released as a commit and
                # outlive a failure later in the action. Begin now, as the writer: actions
                # write, and taking the lock first spares them a conflict half-way.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            token = _active.set(conn)
            try:
                yield
            finally:
                _active.reset(token)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        conn = _active.get()
        if conn is not None:
            yield conn
        else:
            with self.engine.begin() as fresh:
                yield fresh

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        conn = _active.get()
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as fresh:
                yield fresh
