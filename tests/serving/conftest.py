"""Models, versions and instances made in memory, for the parts of :mod:`modelhost.serving`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from modelhost.backends.base import InstanceSpec, InstanceState
from modelhost.db.repo import Model, Version
from tests.fakes import FakeInstance

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc)


def make_model(**values: object) -> Model:
    fields: dict[str, object] = {
        "id": "m1",
        "name": "wine",
        "description": "",
        "owner_id": "u1",
        "instance_count": 1,
        "timeout_seconds": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Model(**{**fields, **values})  # type: ignore[arg-type]


def make_version(number: int = 1, **values: object) -> Version:
    fields: dict[str, object] = {
        "id": f"v{number}",
        "model_id": "m1",
        "number": number,
        "bundle_sha256": "0" * 64,
        "bundle_bytes": 1,
        "bundle_files": 1,
        "file": "calc.py",
        "function": "add",
        "environment": "server",
        "status": "ready",
        "build_log": "",
        "signature": None,
        "description": "",
        "author_id": "u1",
        "created_at": NOW,
        "finished_at": NOW,
    }
    return Version(**{**fields, **values})  # type: ignore[arg-type]


def make_instance(
    instance_id: str, version: Version, state: InstanceState = InstanceState.READY
) -> FakeInstance:
    spec = InstanceSpec(
        instance_id=instance_id,
        model_id=version.model_id,
        version_id=version.id,
        version_number=version.number,
        workdir=Path("/nonexistent"),
        file=version.file,
        function=version.function,
        interpreter="python",
        log_path=Path("/nonexistent/log"),
    )
    instance = FakeInstance(spec)
    instance.state = state
    return instance
