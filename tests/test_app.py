"""The whole app in process, with the fake backend: publish, reconcile, invoke, list."""

from __future__ import annotations

import contextlib
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost.app import ModelhostApp, create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS

pytestmark = pytest.mark.anyio


def _archive(project: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(project.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(project).as_posix())
    return buffer.getvalue()


class Harness:
    def __init__(self, app: ModelhostApp, http: httpx.AsyncClient, backend: FakeBackend) -> None:
        self.app, self.http, self.backend = app, http, backend

    async def publish(self, project: str, file: str, function: str, name: str) -> httpx.Response:
        response = await self.http.post(
            f"/api/v1/models/{name}/versions",
            params={"file": file, "function": function},
            content=_archive(PROJECTS / project),
            headers={"Content-Type": "application/gzip"},
        )
        await self.app.services.reconciler.reconcile_once()
        await self.app.services.reconciler.reconcile_once()
        return response


@contextlib.asynccontextmanager
async def _serving(home: Path) -> AsyncIterator[Harness]:
    """The app in process with the fake backend, its client signed in as the admin."""
    settings = load_settings(
        environ={
            "MODELHOST_HOME": str(home),
            "MODELHOST_SWITCH_HOLD_SECONDS": "0",
            "MODELHOST_DEFAULT_INVOCATION_MODE": "public",
        }
    )
    backend = FakeBackend()
    app = create_app(settings, backend=backend)
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://modelhost",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            yield Harness(app, http, backend)
    finally:
        await app.services.reconciler.close()
        app.services.repo.engine.dispose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with _serving(tmp_path / "home") as serving:
        yield serving


async def test_a_published_function_answers_after_one_reconcile(harness: Harness) -> None:
    published = await harness.publish("calc", "calc.py", "add", "calc")
    assert published.status_code == 201, published.text
    assert published.json()["version"]["status"] == "building"
    response = await harness.http.post("/models/calc/latest/model", json={"data": {"x": 1, "y": 2}})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == 3
    version = (await harness.http.get("/api/v1/models/calc/versions/1")).json()
    assert version["status"] == "running"
    assert version["signature"] == "add(x, y)"


async def test_a_new_version_takes_over_and_the_old_one_is_stopped(harness: Harness) -> None:
    await harness.publish("good", "predict.py", "predict", "swap")
    await harness.publish("calc", "calc.py", "add", "swap")
    response = await harness.http.post("/models/swap/latest/model", json={"parameters": [1, 1]})
    assert response.json()["release"]["model_version_number"] == 2
    await harness.app.services.reconciler.reconcile_once()
    assert [i.spec.version_number for i in harness.backend.instances()] == [2]
    assert [i.spec.version_number for i in harness.backend.stopped] == [1]


async def test_a_version_that_fails_to_load_is_marked_failed_and_never_serves(
    harness: Harness,
) -> None:
    await harness.publish("good", "predict.py", "predict", "fails")
    await harness.publish("not_callable", "predict.py", "predict", "fails")
    versions = (await harness.http.get("/api/v1/models/fails/versions")).json()["versions"]
    assert [v["status"] for v in versions] == ["running", "failed"]
    failed = (await harness.http.get("/api/v1/models/fails/versions/2")).json()
    assert "is a int, not a function" in failed["build_log"]
    response = await harness.http.post("/models/fails/latest/model", json={"data": {"x": 2}})
    assert response.json()["result"] == {"doubled": 4}


async def test_instance_count_changes_start_more_instances(harness: Harness) -> None:
    await harness.publish("calc", "calc.py", "add", "scaled")
    response = await harness.http.patch("/api/v1/models/scaled", json={"instance_count": 3})
    assert response.json()["instance_count"] == 3
    await harness.app.services.reconciler.reconcile_once()
    assert len(harness.backend.instances()) == 3
    too_many = await harness.http.patch("/api/v1/models/scaled", json={"instance_count": 99})
    assert too_many.status_code == 400
    assert "max_instance_count" in too_many.json()["error"]["message"]


async def test_a_model_can_be_created_empty_and_named_only_once(harness: Harness) -> None:
    created = await harness.http.post("/api/v1/models", json={"name": "empty", "description": "d"})
    assert created.status_code == 201
    assert created.json()["status"] == "empty"
    again = await harness.http.post("/api/v1/models", json={"name": "empty"})
    assert again.status_code == 409
    bad = await harness.http.post("/api/v1/models", json={"name": "Not OK!"})
    assert bad.status_code == 400
    missing = await harness.http.post("/api/v1/models", json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["message"].startswith("Invalid request: name: ")
    await harness.app.services.reconciler.reconcile_once()
    response = await harness.http.post("/models/empty/latest/model", json={"data": {}})
    assert response.status_code == 503
    assert "no ready version" in response.json()["error"]["message"]


async def test_publish_refuses_a_non_archive_content_type(harness: Harness) -> None:
    response = await harness.http.post(
        "/api/v1/models/x/versions", params={"file": "a.py", "function": "f"}, json={"a": 1}
    )
    assert response.status_code == 415
    assert "application/gzip" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"file": "../evil.py", "function": "f"}, "must be a path inside the project"),
        ({"file": "model.pkl", "function": "f"}, "not a Python (.py) or R (.R) script"),
        ({"file": "a.py", "function": "not-a-name"}, "not a valid function name"),
        ({"file": "a.py"}, "function: Field required"),
    ],
)
async def test_publish_validates_the_entry_point_before_reading_the_upload(
    harness: Harness, params: dict[str, str], fragment: str
) -> None:
    response = await harness.http.post(
        "/api/v1/models/x/versions",
        params=params,
        content=b"\0" * 10,
        headers={"Content-Type": "application/gzip"},
    )
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


async def test_an_action_whose_audit_event_cannot_be_written_does_not_happen(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.publish("calc", "calc.py", "add", "audit-fails")
    await harness.publish("calc", "calc.py", "add", "audit-fails")
    repo = harness.app.services.repo
    model = repo.find_model("audit-fails")
    assert model is not None
    assert model.deployed_version == 2

    def broken(**_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(repo, "add_audit", broken)
    response = await harness.http.post("/api/v1/models/audit-fails/deploy", json={"version": 1})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    after = repo.find_model("audit-fails")
    assert after is not None
    assert after.deployed_version == 2


async def test_two_apps_made_in_one_process_each_answer_from_their_own_data(
    harness: Harness, tmp_path: Path
) -> None:
    # A process builds the routes once and every app it makes shares them (app.py, _routes):
    # a handler must find its services through the request's own app, never the first app.
    await harness.publish("calc", "calc.py", "add", "only-in-the-first")
    async with _serving(tmp_path / "second") as second:
        created = await second.http.post("/api/v1/models", json={"name": "only-in-the-second"})
        listed = await second.http.get("/api/v1/models")
        stranger = await second.http.get(
            "/api/v1/models", headers={"Authorization": harness.http.headers["Authorization"]}
        )

    assert created.status_code == 201, created.text
    assert [m["name"] for m in listed.json()["models"]] == ["only-in-the-second"]
    assert stranger.status_code == 401  # the first app's key means nothing to the second
    first = (await harness.http.get("/api/v1/models")).json()["models"]
    assert [m["name"] for m in first] == ["only-in-the-first"]
