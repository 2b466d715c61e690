"""What the client returns: typed records of the server's answers.

Each record has the fields it is known by as typed attributes (``version.status``), and is
also a read-only mapping of everything the server sent, so ``version["status"]``,
``model.get("invocation_mode")`` and ``dict(version)`` go on working. A field the server does
not send (an older server) keeps its default; one the client does not know yet is still there
by key.

>>> version = Version.from_json({"number": 2, "status": "running", "new_field": 1})
>>> version.number, version["status"], version["new_field"]
(2, 'running', 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

_R = TypeVar("_R", bound="Record")


@dataclasses.dataclass(frozen=True, eq=False)
class Record(Mapping[str, Any]):
    """A typed answer that also reads like the JSON object it came from (compares equal to it)."""

    _data: Mapping[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_json(cls: type[_R], data: Mapping[str, Any]) -> _R:
        known = {
            field.name: cls._convert(field.name, data[field.name])
            for field in dataclasses.fields(cls)
            if field.name != "_data" and field.name in data
        }
        return cls(_data=dict(data), **known)

    @classmethod
    def _convert(cls, _name: str, value: Any) -> Any:
        return value

    def to_dict(self) -> dict[str, Any]:
        """The answer as the server sent it (a copy)."""
        return dict(self._data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@dataclasses.dataclass(frozen=True, eq=False)
class Model(Record):
    """A model: ``status`` is running, building, failed, stopped, unpublished or empty."""

    id: str = ""
    name: str = ""
    description: str = ""
    owner: str | None = None
    status: str = ""
    latest_version: int | None = None
    newest_version: int | None = None
    instance_count: int | None = None
    timeout_seconds: float | None = None
    routing_mode: str | None = None
    state: str | None = None
    deployed_version: int | None = None
    log_requests: bool | None = None
    network: bool | None = None
    capture: bool | None = None
    capture_share: float | None = None
    #: the hardware tier: name, cpus, memory_mb, gpus (None: none picked)
    tier: dict[str, Any] | None = None
    visibility: str | None = None
    invocation_mode: str | None = None
    labels: dict[str, int] | None = None
    created_at: str | None = None
    updated_at: str | None = None
    urls: dict[str, str] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Version(Record):
    """A version of a model; ``build_log`` and ``lock`` only from :meth:`Client.version`."""

    id: str = ""
    number: int = 0
    status: str = ""
    file: str = ""
    function: str = ""
    entry_point: str = ""
    signature: str | None = None
    environment: str | None = None
    environment_revision: int | None = None
    python_version: str | None = None
    #: an R version's library directory (its named R environment's)
    r_library: str | None = None
    source: str | None = None
    git_commit: str | None = None
    bundle_sha256: str | None = None
    author: str | None = None
    concurrency: int | None = None
    #: a batching function's limits, ``{"max_size": 64, "max_wait_ms": 5.0}``, or None
    batch: dict[str, Any] | None = None
    #: instances are forked from a process that imported the script once (False: fresh)
    fork: bool | None = None
    health: str | None = None
    description: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    build_log: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Instance(Record):
    """One running process of a version."""

    id: str = ""
    version: int = 0
    state: str = ""
    busy: bool | None = None
    pid: int | None = None
    #: forked from its version's fork server, which imported the script once
    forked: bool | None = None
    failure: str | None = None
    gateway: int | None = None
    #: the Ray node it runs on (``backend = ray``); None on the local backend
    node: str | None = None
    #: how it gets its hardware tier's CPUs on the local backend: ``mechanism`` ("cgroup v1",
    #: "cgroup v2" or "affinity"), ``cpus``, and its ``cgroup`` or its ``cores``
    cpu_limit: dict[str, Any] | None = None
    #: what a ``pending`` instance waits for (a Ray node that has what it asks for)
    message: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Run(Record):
    """A command run on the server in a copy of a project."""

    id: str = ""
    status: str = ""
    message: str | None = None
    exit_code: int | None = None
    command: list[str] | None = None
    model: str | None = None
    entry_point: str | None = None
    schedule_id: str | None = None
    owner: str | None = None
    description: str | None = None
    timeout_seconds: float | None = None
    environment: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    published_version: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule(Record):
    """A command run on a cron schedule or an interval; ``last_run`` is its newest run."""

    id: str = ""
    when: str = ""
    cron: str | None = None
    interval_seconds: int | None = None
    timezone: str | None = None
    command: list[str] | None = None
    model: str | None = None
    entry_point: str | None = None
    timeout_seconds: float | None = None
    environment: str | None = None
    paused: bool = False
    next_run_at: str | None = None
    last_run: Run | None = None
    owner: str | None = None
    description: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def _convert(cls, name: str, value: Any) -> Any:
        if name == "last_run" and isinstance(value, Mapping):
            return Run.from_json(value)
        return value


@dataclasses.dataclass(frozen=True, eq=False)
class Token(Record):
    """A model access token; ``token`` (the secret) only in the answer that made it."""

    id: str = ""
    name: str = ""
    prefix: str = ""
    created_at: str | None = None
    revoked: bool = False
    token: str | None = None
    #: calls per unit, such as "50/s" (None: no rate limit)
    rate: str | None = None
    #: calls per UTC day or month, such as "100000/day" (None: no quota)
    quota: str | None = None
    #: with a quota: ``{"used", "limit", "per", "resets_at"}`` for the current window
    usage: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class User(Record):
    """A user account."""

    id: str = ""
    username: str = ""
    is_admin: bool = False
    disabled: bool = False
    created_at: str | None = None
