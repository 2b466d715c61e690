"""The runs and schedules API in process: what users get wrong, who sees which run, and
cancelling a queued run. (Runs execute in the integration tests; here no run loop runs.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost.app import ModelhostApp, create_app
from modelhost.operations import access_control
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import calc_archive

pytestmark = pytest.mark.anyio


@dataclass
class Api:
    app: ModelhostApp
    http: httpx.AsyncClient
    keys: dict[str, str]

    async def post(self, path: str, as_: str = "alice", **params: Any) -> httpx.Response:
        return await self.http.post(
            path,
            params=params,
            content=calc_archive(),
            headers={"Content-Type": "application/gzip", **self.auth(as_)},
        )

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    # alice, no admin, starts runs with no model here; the default refusal is tested on its own
    environ = {"MODELHOST_HOME": str(tmp_path / "home"), "MODELHOST_CODE_RUNNERS": "users"}
    settings = load_settings(environ=environ)
    app = create_app(settings, backend=FakeBackend())
    services = app.services
    keys = {"admin": bootstrap_admin(services.repo, settings.home_path, settings.url) or ""}
    for name in ("alice", "bob"):
        user = services.repo.create_user(name, is_admin=False)
        keys[name] = access_control.create_api_key(services, user, "test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        published = await http.post(
            "/api/v1/models/m/versions",
            params={"file": "calc.py", "function": "add"},
            content=calc_archive(),
            headers={
                "Content-Type": "application/gzip",
                "Authorization": f"Bearer {keys['alice']}",
            },
        )
        assert published.status_code == 201, published.text
        yield Api(app, http, keys)
    await services.reconciler.close()
    services.repo.engine.dispose()


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "request_id"}
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/v1/runs", {}, 400, "command"),
        ("/api/v1/runs", {"command": [""]}, 400, "Give the command to run"),
        ("/api/v1/runs", {"command": ["python"], "file": "calc.py"}, 400, "--publish-model"),
        ("/api/v1/runs", {"command": ["python"], "model": "m"}, 400, "--file predict.py"),
        ("/api/v1/runs", {"command": ["python"], "model": "nope"}, 404, "modelhost publish"),
        ("/api/v1/runs", {"command": ["python"], "timeout_seconds": 1e9}, 400, "at most"),
        (
            "/api/v1/runs",
            {"command": ["python"], "model": "m", "file": "../x.py", "function": "f"},
            400,
            "inside the project",
        ),
        ("/api/v1/schedules", {"command": ["python"]}, 400, "either a cron expression"),
        ("/api/v1/schedules", {"command": ["python"], "cron": "2am"}, 400, "five fields"),
        ("/api/v1/schedules", {"command": ["python"], "every": "5s"}, 400, "at most every 1m"),
        (
            "/api/v1/schedules",
            {"command": ["python"], "cron": "0 2 * * *", "timezone": "Berlin"},
            400,
            "not a time zone",
        ),
    ],
)
async def test_mistakes_in_a_run_or_schedule_are_refused_with_what_to_do(
    api: Api, path: str, params: dict[str, Any], status: int, message: str
) -> None:
    assert message in _error(await api.post(path, **params), status)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"cron": "0 2 30 2 *"}, "'0 2 30 2 *' never fires"),
        ({"every": "99999999d"}, "longer than 3650 days"),
    ],
)
async def test_a_schedule_that_never_fires_or_fires_past_year_9999_is_refused_and_not_stored(
    api: Api, when: dict[str, str], message: str
) -> None:
    assert message in _error(await api.post("/api/v1/schedules", command=["python"], **when), 400)
    created = (await api.post("/api/v1/schedules", command=["python", "a.py"], every="1h")).json()
    replaced = await api.http.put(
        f"/api/v1/schedules/{created['id']}",
        params={"command": ["python", "b.py"], **when},
        content=calc_archive(),
        headers={"Content-Type": "application/gzip", **api.auth("alice")},
    )
    assert message in _error(replaced, 400)
    (stored,) = api.app.services.repo.list_schedules()
    assert (stored.interval_seconds, json.loads(stored.command)) == (3600, ["python", "a.py"])


async def test_a_negative_log_offset_is_refused_and_one_past_the_end_reads_nothing(
    api: Api,
) -> None:
    run = (await api.post("/api/v1/runs", command=["python"])).json()
    path = f"/api/v1/runs/{run['id']}/logs"
    refused = await api.http.get(path, params={"offset": -5}, headers=api.auth("alice"))
    assert "offset is a byte offset, 0 or more" in _error(refused, 400)
    far = await api.http.get(
        path, params={"offset": "99999999999999999999"}, headers=api.auth("alice")
    )
    assert far.status_code == 200, far.text
    assert (far.json()["text"], far.json()["offset"]) == ("", 0)  # the end of the empty log


@pytest.mark.parametrize(("limit", "status"), [(0, 400), (-1, 400), (1001, 400), (1000, 200)])
async def test_a_runs_list_limit_is_1_to_1000(api: Api, limit: int, status: int) -> None:
    response = await api.http.get(
        "/api/v1/runs", params={"limit": limit}, headers=api.auth("alice")
    )
    if status == 400:
        assert "limit is how many runs to list, 1 to 1000" in _error(response, 400)
    else:
        assert response.status_code == 200, response.text


async def test_listing_the_runs_of_an_unknown_schedule_says_there_is_none(api: Api) -> None:
    response = await api.http.get(
        "/api/v1/runs", params={"schedule": "nope"}, headers=api.auth("alice")
    )
    assert "There is no schedule 'nope'" in _error(response, 404)
    created = (await api.post("/api/v1/schedules", command=["python"], every="1h")).json()
    hidden = await api.http.get(
        "/api/v1/runs", params={"schedule": created["id"]}, headers=api.auth("bob")
    )
    assert hidden.json()["error"]["code"] == "schedule_not_found"
    mine = await api.http.get(
        "/api/v1/runs", params={"schedule": created["id"]}, headers=api.auth("alice")
    )
    assert mine.json() == {"runs": []}


async def test_an_upload_that_is_not_an_archive_is_refused(api: Api) -> None:
    response = await api.http.post(
        "/api/v1/runs",
        params={"command": ["python"]},
        content=b"not a tarball",
        headers={"Content-Type": "text/plain", **api.auth("alice")},
    )
    assert "tar.gz" in _error(response, 415)
    response = await api.http.post(
        "/api/v1/runs",
        params={"command": ["python"]},
        content=b"not a tarball",
        headers={"Content-Type": "application/gzip", **api.auth("alice")},
    )
    assert "not a readable .tar.gz" in _error(response, 400)
    assert api.app.services.repo.list_runs() == []  # nothing half-made


async def test_a_run_without_a_model_is_seen_only_by_its_creator_and_admins(api: Api) -> None:
    created = await api.post("/api/v1/runs", command=["python", "calc.py"])
    assert created.status_code == 201, created.text
    run = created.json()
    assert (run["status"], run["owner"], run["model"]) == ("queued", "alice", None)

    for who, visible in (("alice", True), ("admin", True), ("bob", False)):
        shown = await api.http.get(f"/api/v1/runs/{run['id']}", headers=api.auth(who))
        listed = await api.http.get("/api/v1/runs", headers=api.auth(who))
        ids = [r["id"] for r in listed.json()["runs"]]
        assert (run["id"] in ids) is visible
        if visible:
            assert shown.status_code == 200
        else:
            assert "no run" in _error(shown, 404)
            assert shown.json()["error"]["code"] == "run_not_found"


async def test_cancelling_a_queued_run_cancels_it_once(api: Api) -> None:
    run = (await api.post("/api/v1/runs", command=["sleep", "60"])).json()
    cancel = f"/api/v1/runs/{run['id']}/cancel"
    first = await api.http.post(cancel, headers=api.auth("alice"))
    assert first.json()["status"] == "cancelled"
    assert "already finished (cancelled)" in _error(
        await api.http.post(cancel, headers=api.auth("alice")), 409
    )
    log = await api.http.get(f"/api/v1/runs/{run['id']}/logs", headers=api.auth("alice"))
    assert log.json() == {"text": "", "offset": 0, "status": "cancelled", "finished": True}
    events = await api.http.get("/api/v1/audit", headers=api.auth("admin"))
    actions = [(e["action"], e["outcome"]) for e in events.json()["events"]]
    assert ("run-cancel", "success") in actions
    assert ("run-cancel", "failed") in actions


async def test_a_schedule_shows_when_it_runs_next_and_its_audit_trail(api: Api) -> None:
    created = await api.post(
        "/api/v1/schedules",
        command=["python", "train.py"],
        cron="0 2 * * *",
        timezone="Europe/Berlin",
        model="m",
        file="calc.py",
        function="add",
    )
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["when"] == "cron '0 2 * * *' (Europe/Berlin)"
    assert schedule["next_run_at"].endswith(("T01:00:00Z", "T00:00:00Z"))
    assert (schedule["model"], schedule["entry_point"]) == ("m", "calc.py:add")
    paused = await api.http.post(
        f"/api/v1/schedules/{schedule['id']}/pause", headers=api.auth("alice")
    )
    assert (paused.json()["paused"], paused.json()["next_run_at"]) == (True, None)
    denied = await api.http.delete(f"/api/v1/schedules/{schedule['id']}", headers=api.auth("bob"))
    assert denied.json()["error"]["code"] == "schedule_not_found"
    deleted = await api.http.delete(
        f"/api/v1/schedules/{schedule['id']}", headers=api.auth("alice")
    )
    assert deleted.status_code == 204
    events = await api.http.get("/api/v1/models/m/audit", headers=api.auth("alice"))
    actions = [e["action"] for e in events.json()["events"]]
    assert {"schedule-create", "schedule-pause", "schedule-delete"} <= set(actions)


async def test_replacing_a_schedule_keeps_its_id_and_pause_and_uploads_the_project_again(
    api: Api,
) -> None:
    created = (await api.post("/api/v1/schedules", command=["python", "a.py"], every="1h")).json()
    path = f"/api/v1/schedules/{created['id']}"
    await api.http.post(f"{path}/pause", headers=api.auth("alice"))
    replaced = await api.http.put(
        path,
        params={"command": ["python", "b.py"], "cron": "30 3 * * 1", "timezone": "UTC"},
        content=calc_archive(),
        headers={"Content-Type": "application/gzip", **api.auth("alice")},
    )
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["id"], body["paused"], body["command"]) == (
        created["id"],
        True,
        ["python", "b.py"],
    )
    assert body["when"] == "cron '30 3 * * 1' (UTC)"
    refused = await api.http.put(
        path,
        params={"command": ["x"], "every": "1h"},
        content=calc_archive(),
        headers={"Content-Type": "application/gzip", **api.auth("bob")},
    )
    assert refused.json()["error"]["code"] == "schedule_not_found"
    events = await api.http.get("/api/v1/audit", headers=api.auth("admin"))
    assert "schedule-update" in [e["action"] for e in events.json()["events"]]


async def test_a_viewer_may_see_a_run_on_the_model_but_a_cancel_is_refused_and_audited(
    api: Api,
) -> None:
    put = await api.http.put(
        "/api/v1/models/m/collaborators/bob", json={"role": "viewer"}, headers=api.auth("alice")
    )
    assert put.status_code == 200, put.text
    run = (
        await api.post(
            "/api/v1/runs", command=["python"], model="m", file="calc.py", function="add"
        )
    ).json()
    shown = await api.http.get(f"/api/v1/runs/{run['id']}", headers=api.auth("bob"))
    assert shown.status_code == 200
    refused = await api.http.post(f"/api/v1/runs/{run['id']}/cancel", headers=api.auth("bob"))
    assert "run needs editor" in _error(refused, 403)
    events = await api.http.get("/api/v1/models/m/audit", headers=api.auth("alice"))
    (denied,) = [e for e in events.json()["events"] if e["action"] == "run-cancel"]
    assert (denied["actor"], denied["outcome"]) == ("bob", "denied")
    assert denied["detail"]["run_id"] == run["id"]
