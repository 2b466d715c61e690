"""The repository: every query modelhost makes. Nothing else writes SQL.

Rows come back as frozen dataclasses so callers never hold a live connection.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Update, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelhost.db import tables as t
from modelhost.db.access import AccessRepo, ApiKey, AuditEvent, Group, Token, User
from modelhost.db.base import _row, new_id, utcnow
from modelhost.db.call_minutes import CallMinute, CallMinutesRepo
from modelhost.db.environments import EnvironmentRepo, NamedEnvironment
from modelhost.db.predictions import PredictionsRepo
from modelhost.db.runs import Run, RunsRepo, Schedule

__all__ = [
    "ApiKey",
    "AuditEvent",
    "BuildFailure",
    "CallMinute",
    "EnvVar",
    "Group",
    "Label",
    "Model",
    "NamedEnvironment",
    "Repo",
    "Run",
    "Schedule",
    "Token",
    "User",
    "Version",
    "new_id",
    "utcnow",
]


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    description: str
    owner_id: str
    instance_count: int
    timeout_seconds: float | None
    created_at: dt.datetime
    updated_at: dt.datetime
    routing_mode: str = "basic"
    state: str = "running"
    generation: int = 0
    log_requests: bool = False
    deployed_version: int | None = None
    visibility: str = "private"
    invocation_mode: str = "token"
    network: bool = True
    capture: bool = False
    capture_share: float = 1.0
    tier: str | None = None


@dataclass(frozen=True)
class BuildFailure:
    """Why a version failed, as data: ``kind`` is ``environment`` (its environment could not
    be built), ``load`` (its script did not load), ``start`` (no instance could be started)
    ``crash`` (it crashed on its first calls after taking a route) or ``errors`` (too many of
    its first calls failed after taking a route)."""

    kind: str
    message: str
    traceback: str | None = None


@dataclass(frozen=True)
class Version:
    id: str
    model_id: str
    number: int
    bundle_sha256: str
    bundle_bytes: int
    bundle_files: int
    file: str
    function: str
    environment: str
    status: str
    build_log: str
    signature: str | None
    description: str
    author_id: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    desired_state: str | None = None
    concurrency: int = 1
    health: str = "ok"
    health_log: str = ""
    #: the named environment's revision (``environment`` is then its name)
    environment_revision: int | None = None
    #: the locked requirements (with hashes) of an isolated or named environment
    environment_lock: str | None = None
    #: the cache key of the built environment: sha256 of the lock and the interpreter
    environment_hash: str | None = None
    #: the base Python the environment was made from (or that runs a server version)
    interpreter: str | None = None
    python_version: str | None = None
    #: where the project came from, e.g. git+file:///repo@v1, and the commit it was at
    source: str | None = None
    git_commit: str | None = None
    #: why it failed (see :class:`BuildFailure`); None unless ``status`` is ``failed``
    failure_kind: str | None = None
    failure_message: str | None = None
    failure_traceback: str | None = None
    #: the Idempotency-Key of the publish that made it, if the client sent one
    idempotency_key: str | None = None
    #: an example request body as JSON text (``{"data": …}`` or ``{"parameters": […]}``)
    example: str | None = None
    #: a batching function's largest batch (None: the function takes one call's arguments)
    batch_max_size: int | None = None
    #: how long calls wait for company while every instance is busy
    batch_max_wait_ms: float | None = None
    #: the function's parameters and result as JSON Schema, JSON text (runtime/signatures.py)
    signature_schema: str | None = None
    #: the library directory of an R version's named environment (only it and base R are seen)
    r_library: str | None = None
    #: instances are forked from the version's fork server (False: each starts fresh)
    fork: bool = True

    @property
    def failure(self) -> BuildFailure | None:
        if self.failure_kind is None:
            return None
        return BuildFailure(self.failure_kind, self.failure_message or "", self.failure_traceback)

    @property
    def isolated(self) -> bool:
        """Whether instances run in a Python environment of their own (isolated or named)."""
        return self.environment not in ("server", "r") and self.r_library is None

    @property
    def environment_runtime(self) -> str:
        """``r`` for R versions (with the server's R library or a named one), ``python`` for
        every Python environment."""
        return "r" if self.environment == "r" or self.r_library is not None else "python"


@dataclass(frozen=True)
class Label:
    model_id: str
    name: str
    version: int
    canary_version: int | None
    canary_weight: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class EnvVar:
    model_id: str
    name: str
    value: str  # encrypted when secret
    secret: bool
    updated_at: dt.datetime


class Repo(RunsRepo, AccessRepo, EnvironmentRepo, CallMinutesRepo, PredictionsRepo):
    """All reads and writes, over one SQLAlchemy engine (see :class:`Store` for transactions).

    Users, keys, tokens, collaborators and audit events are in :mod:`modelhost.db.access`;
    named environments in :mod:`modelhost.db.environments`; runs and schedules in
    :mod:`modelhost.db.runs`.
    """

    # ------------------------------------------------------------------ models

    def list_models(self) -> list[Model]:
        with self._connect() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.name)).all()
        return [_row(Model, r) for r in rows]

    def find_model(self, key: str) -> Model | None:
        """A model by id or by name."""
        query = select(t.models).where((t.models.c.id == key) | (t.models.c.name == key))
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _row(Model, row) if row else None

    def create_model(
        self,
        name: str,
        *,
        owner_id: str,
        description: str,
        instance_count: int,
        invocation_mode: str = "token",
    ) -> Model:
        now = utcnow()
        model = Model(
            id=new_id(),
            name=name,
            description=description,
            owner_id=owner_id,
            instance_count=instance_count,
            timeout_seconds=None,
            created_at=now,
            updated_at=now,
            invocation_mode=invocation_mode,
        )
        with self._begin() as conn:
            conn.execute(insert(t.models).values(**model.__dict__))
        return model

    def get_or_create_model(
        self,
        name: str,
        *,
        owner_id: str,
        description: str,
        instance_count: int,
        invocation_mode: str = "token",
    ) -> tuple[Model, bool]:
        existing = self.find_model(name)
        if existing:
            return existing, False
        with self._begin() as conn:
            savepoint = conn.begin_nested()  # a concurrent publish may create it first
            try:
                model = self.create_model(
                    name,
                    owner_id=owner_id,
                    description=description,
                    instance_count=instance_count,
                    invocation_mode=invocation_mode,
                )
            except IntegrityError:
                savepoint.rollback()
                found = self.find_model(name)
                assert found is not None
                return found, False
            savepoint.commit()
        return model, True

    def update_model(self, model_id: str, **values: Any) -> Model:
        with self._begin() as conn:
            conn.execute(
                update(t.models)
                .where(t.models.c.id == model_id)
                .values(**values, updated_at=utcnow())
            )
        model = self.find_model(model_id)
        assert model is not None
        return model

    # ------------------------------------------------------------------ versions

    def create_version(self, model_id: str, **values: Any) -> Version:
        """Insert the next version of a model, numbered 1, 2, 3… without gaps or duplicates."""
        for _attempt in range(20):
            with self._begin() as conn:
                # Lock the model row (PostgreSQL) so concurrent publishes take turns; SQLite
                # serialises writers itself and a rare clash is retried below.
                conn.execute(
                    select(t.models.c.id).where(t.models.c.id == model_id).with_for_update()
                )
                current = conn.execute(
                    select(func.max(t.versions.c.number)).where(t.versions.c.model_id == model_id)
                ).scalar_one()
                row = {
                    "id": new_id(),
                    "model_id": model_id,
                    "number": (current or 0) + 1,
                    "status": "building",
                    "build_log": "",
                    "signature": None,
                    "created_at": utcnow(),
                    "finished_at": None,
                    "desired_state": None,
                    "concurrency": 1,
                    "health": "ok",
                    "health_log": "",
                    **values,
                }
                savepoint = conn.begin_nested()
                try:
                    conn.execute(insert(t.versions).values(**row))
                except IntegrityError:
                    savepoint.rollback()
                    continue
                savepoint.commit()
            return Version(**row)
        raise RuntimeError("could not allocate a version number")

    def list_versions(self, model_id: str) -> list[Version]:
        query = (
            select(t.versions)
            .where(t.versions.c.model_id == model_id)
            .order_by(t.versions.c.number)
        )
        with self._connect() as conn:
            return [_row(Version, r) for r in conn.execute(query)]

    def list_all_versions(self) -> list[Version]:
        query = select(t.versions).order_by(t.versions.c.model_id, t.versions.c.number)
        with self._connect() as conn:
            return [_row(Version, r) for r in conn.execute(query)]

    def get_version(self, model_id: str, number: int) -> Version | None:
        if not 0 < number < 1 << 31:  # no such version, and past what the database can compare
            return None
        query = select(t.versions).where(
            t.versions.c.model_id == model_id, t.versions.c.number == number
        )
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _row(Version, row) if row else None

    def find_version_by_key(self, model_id: str, key: str) -> Version | None:
        """The version an earlier publish with Idempotency-Key ``key`` made, if any."""
        query = select(t.versions).where(
            t.versions.c.model_id == model_id, t.versions.c.idempotency_key == key
        )
        with self._connect() as conn:
            row = conn.execute(query).first()
        return _row(Version, row) if row else None

    def get_version_by_id(self, version_id: str) -> Version | None:
        with self._connect() as conn:
            row = conn.execute(select(t.versions).where(t.versions.c.id == version_id)).first()
        return _row(Version, row) if row else None

    def finish_build(
        self,
        version_id: str,
        *,
        status: str,
        log: str,
        signature: str | None = None,
        signature_schema: str | None = None,
        failure: BuildFailure | None = None,
    ) -> bool:
        """Record a build outcome once; returns False when it was already recorded."""
        query = (
            update(t.versions)
            .where(t.versions.c.id == version_id, t.versions.c.status == "building")
            .values(
                status=status,
                build_log=log,
                signature=signature,
                signature_schema=signature_schema,
                finished_at=utcnow(),
                **failure_values(failure),
            )
        )
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def update_version(self, version_id: str, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(update(t.versions).where(t.versions.c.id == version_id).values(**values))

    def bump_generation(self, model_id: str) -> None:
        """Ask for fresh instances of every running version of a model (a rolling restart)."""
        with self._begin() as conn:
            conn.execute(_next_generation(model_id))

    def delete_model(self, model_id: str) -> list[str]:
        """Delete a model, its versions, labels, variables, schedules; returns the version ids."""
        with self._begin() as conn:
            version_ids = list(
                conn.execute(
                    select(t.versions.c.id).where(t.versions.c.model_id == model_id)
                ).scalars()
            )
            # Audit events stay: they keep the model's id and name but have no foreign key.
            for table in (
                t.env_vars,
                t.labels,
                t.model_tokens,
                t.collaborators,
                t.group_roles,
                t.schedules,
                t.versions,
                t.call_minutes,
                t.async_predictions,
                t.model_webhooks,
            ):
                conn.execute(delete(table).where(table.c.model_id == model_id))
            conn.execute(delete(t.models).where(t.models.c.id == model_id))
        return version_ids

    def bundle_in_use(self, sha256: str) -> bool:
        query = select(func.count()).where(t.versions.c.bundle_sha256 == sha256)
        with self._connect() as conn:
            return bool(conn.execute(query).scalar_one()) or self.bundle_needed_by_jobs(sha256)

    # ------------------------------------------------------------------ labels

    def list_labels(self, model_id: str | None = None) -> list[Label]:
        query = select(t.labels).order_by(t.labels.c.model_id, t.labels.c.name)
        if model_id is not None:
            query = query.where(t.labels.c.model_id == model_id)
        with self._connect() as conn:
            return [_row(Label, r) for r in conn.execute(query)]

    def set_label(
        self, model_id: str, name: str, version: int, canary_version: int | None, weight: int
    ) -> Label:
        label = Label(model_id, name, version, canary_version, weight, utcnow())
        with self._begin() as conn:
            conn.execute(
                delete(t.labels).where(t.labels.c.model_id == model_id, t.labels.c.name == name)
            )
            conn.execute(insert(t.labels).values(**label.__dict__))
        return label

    def delete_label(self, model_id: str, name: str) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                delete(t.labels).where(t.labels.c.model_id == model_id, t.labels.c.name == name)
            )
        return result.rowcount == 1

    # ------------------------------------------------------------------ environment variables

    def list_env(self, model_id: str | None = None) -> list[EnvVar]:
        query = select(t.env_vars).order_by(t.env_vars.c.model_id, t.env_vars.c.name)
        if model_id is not None:
            query = query.where(t.env_vars.c.model_id == model_id)
        with self._connect() as conn:
            return [_row(EnvVar, r) for r in conn.execute(query)]

    def set_env(self, model_id: str, name: str, value: str, *, secret: bool) -> None:
        """Set a variable and bump the model's generation, in one transaction."""
        with self._begin() as conn:
            conn.execute(
                delete(t.env_vars).where(
                    t.env_vars.c.model_id == model_id, t.env_vars.c.name == name
                )
            )
            conn.execute(
                insert(t.env_vars).values(
                    model_id=model_id, name=name, value=value, secret=secret, updated_at=utcnow()
                )
            )
            conn.execute(_next_generation(model_id))

    def unset_env(self, model_id: str, name: str) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                delete(t.env_vars).where(
                    t.env_vars.c.model_id == model_id, t.env_vars.c.name == name
                )
            )
            if result.rowcount:
                conn.execute(_next_generation(model_id))
        return bool(result.rowcount)


def _next_generation(model_id: str) -> Update:
    """Count a model's generation up in the database (never read, add one and write back)."""
    return (
        update(t.models)
        .where(t.models.c.id == model_id)
        .values(generation=t.models.c.generation + 1, updated_at=utcnow())
    )


def failure_values(failure: BuildFailure | None) -> dict[str, str | None]:
    """The columns of a version that hold ``failure``."""
    return {
        "failure_kind": failure.kind if failure else None,
        "failure_message": failure.message if failure else None,
        "failure_traceback": failure.traceback if failure else None,
    }
