"""The publish parameters of environments and git sources, checked before anything is stored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelhost.app import create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import calc_archive

pytestmark = pytest.mark.anyio


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(environ={"MODELHOST_HOME": str(tmp_path / "home")})
    app = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client
    await app.services.reconciler.close()
    app.services.repo.engine.dispose()


@pytest.mark.parametrize(
    ("params", "status", "code", "message"),
    [
        ({"environment": "Not A Name"}, 400, "bad_request", "is not an environment"),
        ({"environment": "missing-env"}, 404, "environment_not_found", "modelhost envs create"),
        ({"environment": "isolated"}, 400, "bad_request", "needs the project's dependencies"),
        ({"python": "3.11"}, 400, "bad_request", "--environment isolated"),
        ({"git_commit": "abc"}, 400, "bad_request", "full commit hash"),
    ],
)
async def test_a_publish_with_a_wrong_environment_or_source_is_refused_and_stores_nothing(
    http: httpx.AsyncClient, params: dict[str, str], status: int, code: str, message: str
) -> None:
    response = await http.post(
        "/api/v1/models/calc/versions",
        params={"file": "calc.py", "function": "add", **params},
        content=calc_archive(),
        headers={"Content-Type": "application/gzip"},
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert message in response.json()["error"]["message"]
    assert (await http.get("/api/v1/models/calc")).status_code == 404


async def test_a_project_without_requirements_runs_in_the_server_environment_with_its_python(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/api/v1/models/calc/versions",
        params={"file": "calc.py", "function": "add"},
        content=calc_archive(),
        headers={"Content-Type": "application/gzip"},
    )
    version = response.json()["version"]
    assert (version["environment"], version["packages"], version["lock"]) == ("server", [], None)
    assert version["python_version"].count(".") == 2


async def test_named_environment_mistakes_answer_in_the_envelope(
    http: httpx.AsyncClient,
) -> None:
    missing = await http.get("/api/v1/environments/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "environment_not_found"
    reserved = await http.post(
        "/api/v1/environments", json={"name": "isolated", "requirements": ""}
    )
    assert reserved.status_code == 400
    assert "not a valid environment name" in reserved.json()["error"]["message"]
    python = await http.post(
        "/api/v1/environments", json={"name": "e", "requirements": "", "python": "3.99"}
    )
    assert python.status_code == 400
    assert python.json()["error"]["code"] == "environment_failed"
    assert (await http.get("/api/v1/environments")).json() == {"environments": []}


async def test_anyone_may_create_an_environment_but_only_its_creator_or_an_admin_revise_it(
    http: httpx.AsyncClient,
) -> None:
    keys: dict[str, dict[str, str]] = {}
    for name in ("ana", "bo"):
        created = await http.post("/api/v1/users", json={"username": name, "password": "pw-" * 4})
        assert created.status_code == 201, created.text
        signed_in = await http.post("/api/v1/login", json={"username": name, "password": "pw-" * 4})
        keys[name] = {"Authorization": f"Bearer {signed_in.json()['api_key']}"}
    body = {"name": "anas", "requirements": ""}
    first = await http.post("/api/v1/environments", json=body, headers=keys["ana"])
    assert (first.status_code, first.json()["revision"], first.json()["created"]) == (201, 1, True)
    same = await http.post("/api/v1/environments", json=body, headers=keys["ana"])
    assert (same.status_code, same.json()["created"]) == (200, False)
    revised = {**body, "requirements": "# nothing yet\n"}
    refused = await http.post("/api/v1/environments", json=revised, headers=keys["bo"])
    assert refused.status_code == 403
    assert "only they or a server admin can revise it" in refused.json()["error"]["message"]
    by_admin = await http.post("/api/v1/environments", json=revised)
    assert (by_admin.status_code, by_admin.json()["revision"]) == (201, 2)
    assert by_admin.json()["created_by"] == "admin"
    shown = (await http.get("/api/v1/environments/anas", params={"revision": 1})).json()
    assert (shown["created_by"], [r["revision"] for r in shown["revisions"]]) == ("ana", [1, 2])
    pruned = await http.post("/api/v1/environments/prune", headers=keys["ana"])
    assert pruned.status_code == 403


async def test_a_git_source_with_credentials_is_recorded_without_them(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/api/v1/models/calc/versions",
        params={
            "file": "calc.py",
            "function": "add",
            "source": "git+https://alice:hunter2@git.example/o/r.git@v1",
        },
        content=calc_archive(),
        headers={"Content-Type": "application/gzip"},
    )
    assert response.status_code == 201, response.text
    shown = (await http.get("/api/v1/models/calc/versions/1")).text
    assert "git+https://git.example/o/r.git@v1" in shown
    assert "hunter2" not in shown
    assert "alice" not in shown
