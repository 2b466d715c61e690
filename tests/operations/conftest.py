"""A server's services on SQLite with the fake backend, and three users: an owner, an editor
and a viewer of one model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelhost.app import create_app
from modelhost.db.repo import Model, User
from modelhost.operations import Services
from modelhost.settings import load_settings
from tests.fakes import FakeBackend


@dataclass
class World:
    services: Services
    owner: User
    editor: User
    viewer: User
    model: Model

    def add_version(self, status: str = "ready") -> int:
        """The number of a new version of the model, as if published, with ``status``."""
        return self.services.repo.create_version(
            self.model.id,
            bundle_sha256="0" * 64,
            bundle_bytes=1,
            bundle_files=1,
            file="p.py",
            function="f",
            environment="server",
            description="",
            author_id=self.owner.id,
            status=status,
        ).number

    def events(self, action: str) -> list[dict[str, object]]:
        from modelhost.operations.audit import list_events

        return list_events(self.services, action=action)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = load_settings(
        {"database_url": f"sqlite:///{tmp_path / 'modelhost.db'}"},
        environ={"MODELHOST_HOME": str(tmp_path / "home")},
    )
    app = create_app(settings, backend=FakeBackend())
    repo = app.services.repo
    owner = repo.create_user("olivia", is_admin=False)
    editor = repo.create_user("eddie", is_admin=False)
    viewer = repo.create_user("vera", is_admin=False)
    model = repo.create_model(
        "wine", owner_id=owner.id, description="", instance_count=1, invocation_mode="token"
    )
    repo.set_collaborator(model.id, editor.id, "editor")
    repo.set_collaborator(model.id, viewer.id, "viewer")
    yield World(app.services, owner, editor, viewer, model)
    repo.engine.dispose()
