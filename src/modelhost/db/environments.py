"""Queries for named environments and the environments versions use."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelhost.db import tables as t
from modelhost.db.base import Store, _row, new_id, utcnow


@dataclass(frozen=True)
class NamedEnvironment:
    """One revision of a named environment: its requirements and the lock made from them, or
    (``kind`` ``r``) the R library directory an admin prepared."""

    id: str
    name: str
    revision: int
    requirements: str
    lock: str
    interpreter: str
    python_version: str
    created_by: str
    created_at: dt.datetime
    #: "python" or "r"
    kind: str = "python"
    #: an R environment's library directory
    r_library: str | None = None


class EnvironmentRepo(Store):
    def list_environments(self, name: str | None = None) -> list[NamedEnvironment]:
        """Every revision (of ``name``, or of all), by name then revision."""
        query = select(t.environments).order_by(t.environments.c.name, t.environments.c.revision)
        if name is not None:
            query = query.where(t.environments.c.name == name)
        with self._connect() as conn:
            return [_row(NamedEnvironment, r) for r in conn.execute(query)]

    def get_environment(self, name: str, revision: int | None = None) -> NamedEnvironment | None:
        """A revision of a named environment; the newest one without ``revision``."""
        revisions = self.list_environments(name)
        if revision is None:
            return revisions[-1] if revisions else None
        return next((r for r in revisions if r.revision == revision), None)

    def add_environment_revision(
        self,
        name: str,
        *,
        requirements: str,
        lock: str,
        interpreter: str,
        python_version: str,
        created_by: str,
        kind: str = "python",
        r_library: str | None = None,
    ) -> NamedEnvironment:
        """Insert the next revision of ``name`` (1 for a new name); concurrent adds retry."""
        for _attempt in range(20):
            with self._begin() as conn:
                current = conn.execute(
                    select(func.max(t.environments.c.revision)).where(t.environments.c.name == name)
                ).scalar_one()
                row = NamedEnvironment(
                    id=new_id(),
                    name=name,
                    revision=(current or 0) + 1,
                    requirements=requirements,
                    lock=lock,
                    interpreter=interpreter,
                    python_version=python_version,
                    created_by=created_by,
                    created_at=utcnow(),
                    kind=kind,
                    r_library=r_library,
                )
                savepoint = conn.begin_nested()
                try:
                    conn.execute(insert(t.environments).values(**row.__dict__))
                except IntegrityError:
                    savepoint.rollback()
                    continue
                savepoint.commit()
            return row
        raise RuntimeError("could not allocate an environment revision")

    def environment_hashes_in_use(self) -> set[str]:
        """The cached environments some version needs."""
        query = select(t.versions.c.environment_hash).where(
            t.versions.c.environment_hash.is_not(None)
        )
        with self._connect() as conn:
            return {h for h in conn.execute(query).scalars() if h}

    def append_build_log(self, version_id: str, text: str) -> None:
        """Add to a version's build log in the database (never read, add and write back)."""
        query = (
            update(t.versions)
            .where(t.versions.c.id == version_id)
            .values(build_log=t.versions.c.build_log + text)
        )
        with self._begin() as conn:
            conn.execute(query)
