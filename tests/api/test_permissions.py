"""Every management route x (admin, owner, editor, viewer, users whose role comes from a
group, unrelated user, anonymous), matched against the permission table. Each case runs on its
own copy of one prepared server state, so destructive routes cannot change what later cases
see."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.routing import APIRoute

from modelhost import urls
from modelhost.app import ROUTERS, create_app
from modelhost.operations import access_control
from modelhost.operations import environments as environment_ops
from modelhost.operations.credentials import bootstrap_admin
from modelhost.permissions import ENVIRONMENT_PERMISSIONS
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import calc_archive
from tests.test_permissions_table import LEAST_ROLE, ROLE_ORDER

PUBLIC, AUTHENTICATED, ADMIN = "public", "authenticated", "admin"
ACTORS = (
    "admin",
    "owner",
    "editor",
    "viewer",
    "gviewer",  # viewer through the group readers only
    "geditor",  # editor through the group builders only
    "mixed",  # a viewer of their own, and editor through builders: the highest counts
    "stranger",
    "anonymous",
)
#: the role each actor holds on the model m, their own or through a group
ROLE_OF = {"gviewer": "viewer", "geditor": "editor", "mixed": "editor"}

#: Every route and what it needs: an action from the permission table, or a server-level need.
ROUTE_NEEDS: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/favicon.ico"): PUBLIC,
    ("POST", "/api/v1/login"): PUBLIC,
    ("GET", "/api/v1/me"): AUTHENTICATED,
    ("GET", "/api/v1/models"): AUTHENTICATED,
    ("POST", "/api/v1/models"): AUTHENTICATED,
    ("GET", "/api/v1/models/{model}"): "view",
    ("PATCH", "/api/v1/models/{model}"): "manage-settings",
    ("GET", "/api/v1/models/{model}/versions"): "view",
    ("GET", "/api/v1/models/{model}/versions/{number}"): "view",
    ("POST", "/api/v1/models/{model}/versions"): "publish",
    ("PATCH", "/api/v1/models/{model}/versions/{number}"): "manage-settings",
    ("GET", "/api/v1/models/{model}/instances"): "view",
    ("GET", "/api/v1/models/{model}/logs"): "view-logs",
    ("GET", "/api/v1/models/{model}/metrics"): "view",
    ("GET", "/api/v1/models/{model}/requests"): "view-logs",
    ("GET", "/api/v1/models/{model}/captures"): "read-captures",
    ("POST", "/api/v1/models/{model}/captures/drift"): "read-captures",
    ("GET", "/metrics"): ADMIN,
    ("POST", "/api/v1/models/{model}/deploy"): "deploy",
    ("POST", "/api/v1/models/{model}/rollback"): "deploy",
    ("POST", "/api/v1/models/{model}/promote"): "deploy",
    ("GET", "/api/v1/models/{model}/labels"): "view",
    ("PUT", "/api/v1/models/{model}/labels/{label}"): "deploy",
    ("DELETE", "/api/v1/models/{model}/labels/{label}"): "deploy",
    ("POST", "/api/v1/models/{model}/stop"): "deploy",
    ("POST", "/api/v1/models/{model}/start"): "deploy",
    ("POST", "/api/v1/models/{model}/restart"): "deploy",
    ("POST", "/api/v1/models/{model}/unpublish"): "unpublish",
    ("DELETE", "/api/v1/models/{model}"): "delete",
    ("GET", "/api/v1/models/{model}/env"): "view-config",
    ("PUT", "/api/v1/models/{model}/env/{name}"): "manage-env",
    ("DELETE", "/api/v1/models/{model}/env/{name}"): "manage-env",
    ("GET", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users"): ADMIN,
    ("POST", "/api/v1/users/{username}/disable"): ADMIN,
    ("GET", "/api/v1/keys"): AUTHENTICATED,
    ("POST", "/api/v1/keys"): AUTHENTICATED,
    ("DELETE", "/api/v1/keys/{key_id}"): AUTHENTICATED,
    ("GET", "/api/v1/models/{model}/tokens"): "manage-tokens",
    ("POST", "/api/v1/models/{model}/tokens"): "manage-tokens",
    ("DELETE", "/api/v1/models/{model}/tokens/{token_id}"): "manage-tokens",
    ("PATCH", "/api/v1/models/{model}/tokens/{token_id}"): "manage-tokens",
    ("POST", "/api/v1/models/{model}/tokens/{token_id}/regenerate"): "manage-tokens",
    ("GET", "/api/v1/models/{model}/collaborators"): "view",
    ("PUT", "/api/v1/models/{model}/collaborators/{username}"): "manage-collaborators",
    ("DELETE", "/api/v1/models/{model}/collaborators/{username}"): "manage-collaborators",
    ("PATCH", "/api/v1/models/{model}/access"): "change-access",
    ("POST", "/api/v1/models/{model}/transfer"): "transfer",
    ("GET", "/api/v1/models/{model}/audit"): "view-audit",
    ("POST", "/api/v1/models/{model}/test"): "test",
    ("GET", "/api/v1/models/{model}/webhook"): "view-config",
    ("PUT", "/api/v1/models/{model}/webhook"): "manage-settings",
    ("GET", "/api/v1/groups"): AUTHENTICATED,
    ("POST", "/api/v1/groups"): ADMIN,
    ("DELETE", "/api/v1/groups/{group}"): ADMIN,
    ("PUT", "/api/v1/groups/{group}/members/{username}"): ADMIN,
    ("DELETE", "/api/v1/groups/{group}/members/{username}"): ADMIN,
    ("PUT", "/api/v1/models/{model}/groups/{group}"): "manage-collaborators",
    ("DELETE", "/api/v1/models/{model}/groups/{group}"): "manage-collaborators",
    ("GET", "/api/v1/audit"): ADMIN,
    ("GET", "/api/v1/environments"): "view-environments",
    ("POST", "/api/v1/environments"): "create-environment",
    ("GET", "/api/v1/environments/{name}"): "view-environments",
    ("POST", "/api/v1/environments/prune"): "prune-environments",
    # The run and the schedule the cases act on publish to the model, which decides.
    ("POST", "/api/v1/runs"): "run",
    ("GET", "/api/v1/runs"): AUTHENTICATED,
    ("GET", "/api/v1/runs/{run_id}"): "view",
    ("GET", "/api/v1/runs/{run_id}/logs"): "view-logs",
    ("POST", "/api/v1/runs/{run_id}/cancel"): "run",
    ("POST", "/api/v1/schedules"): "schedule",
    ("GET", "/api/v1/schedules"): AUTHENTICATED,
    ("GET", "/api/v1/schedules/{schedule_id}"): "view",
    ("PUT", "/api/v1/schedules/{schedule_id}"): "schedule",
    ("POST", "/api/v1/schedules/{schedule_id}/pause"): "schedule",
    ("POST", "/api/v1/schedules/{schedule_id}/resume"): "schedule",
    ("POST", "/api/v1/schedules/{schedule_id}/take-over"): "take-over-schedule",
    ("DELETE", "/api/v1/schedules/{schedule_id}"): "schedule",
    # A model's OpenAPI documents: viewers (and holders of its tokens, tested elsewhere).
    ("GET", "/models/{model}/openapi.json"): "view",
    ("GET", "/models/{model}/labels/{label}/openapi.json"): "view",
    ("GET", "/models/{model}/versions/{number}/openapi.json"): "view",
}

#: The status each route answers when it succeeds, from the routes table of docs/api.md ("201,
#: the new model", "204", ...): an allowed case must get exactly this, never merely "not an error".
SUCCESS: dict[tuple[str, str], int] = {
    # from the routes tables in docs/api.md
    ("GET", "/api/v1/models/{model}/captures"): 200,
    ("POST", "/api/v1/models/{model}/captures/drift"): 200,
    ("PATCH", "/api/v1/models/{model}/tokens/{token_id}"): 200,
    ("GET", "/api/v1/models/{model}/webhook"): 200,
    ("PUT", "/api/v1/models/{model}/webhook"): 200,
    ("PATCH", "/api/v1/models/{model}/versions/{number}"): 200,
    ("GET", "/models/{model}/openapi.json"): 200,
    ("GET", "/models/{model}/labels/{label}/openapi.json"): 200,
    ("GET", "/models/{model}/versions/{number}/openapi.json"): 200,
    ("GET", "/health"): 200,
    ("GET", "/"): 200,
    ("GET", "/favicon.ico"): 200,
    ("POST", "/api/v1/login"): 200,
    ("GET", "/api/v1/me"): 200,
    ("GET", "/api/v1/models"): 200,
    ("POST", "/api/v1/models"): 201,
    ("GET", "/api/v1/models/{model}"): 200,
    ("PATCH", "/api/v1/models/{model}"): 200,
    ("GET", "/api/v1/models/{model}/versions"): 200,
    ("GET", "/api/v1/models/{model}/versions/{number}"): 200,
    ("POST", "/api/v1/models/{model}/versions"): 201,
    ("GET", "/api/v1/models/{model}/instances"): 200,
    ("GET", "/api/v1/models/{model}/logs"): 200,
    ("GET", "/api/v1/models/{model}/metrics"): 200,
    ("GET", "/api/v1/models/{model}/requests"): 200,
    ("GET", "/metrics"): 200,
    ("POST", "/api/v1/models/{model}/deploy"): 200,
    ("POST", "/api/v1/models/{model}/rollback"): 200,
    ("POST", "/api/v1/models/{model}/promote"): 200,
    ("GET", "/api/v1/models/{model}/labels"): 200,
    ("PUT", "/api/v1/models/{model}/labels/{label}"): 200,
    ("DELETE", "/api/v1/models/{model}/labels/{label}"): 204,
    ("POST", "/api/v1/models/{model}/stop"): 200,
    ("POST", "/api/v1/models/{model}/start"): 200,
    ("POST", "/api/v1/models/{model}/restart"): 200,
    ("POST", "/api/v1/models/{model}/unpublish"): 200,
    ("DELETE", "/api/v1/models/{model}"): 204,
    ("GET", "/api/v1/models/{model}/env"): 200,
    ("PUT", "/api/v1/models/{model}/env/{name}"): 200,
    ("DELETE", "/api/v1/models/{model}/env/{name}"): 204,
    ("GET", "/api/v1/users"): 200,
    ("POST", "/api/v1/users"): 201,
    ("POST", "/api/v1/users/{username}/disable"): 200,
    ("GET", "/api/v1/keys"): 200,
    ("POST", "/api/v1/keys"): 201,
    ("DELETE", "/api/v1/keys/{key_id}"): 204,
    ("GET", "/api/v1/models/{model}/tokens"): 200,
    ("POST", "/api/v1/models/{model}/tokens"): 201,
    ("DELETE", "/api/v1/models/{model}/tokens/{token_id}"): 204,
    ("POST", "/api/v1/models/{model}/tokens/{token_id}/regenerate"): 200,
    ("GET", "/api/v1/models/{model}/collaborators"): 200,
    ("PUT", "/api/v1/models/{model}/collaborators/{username}"): 200,
    ("DELETE", "/api/v1/models/{model}/collaborators/{username}"): 204,
    ("PATCH", "/api/v1/models/{model}/access"): 200,
    ("POST", "/api/v1/models/{model}/transfer"): 200,
    ("GET", "/api/v1/models/{model}/audit"): 200,
    ("POST", "/api/v1/models/{model}/test"): 200,
    ("GET", "/api/v1/groups"): 200,
    ("POST", "/api/v1/groups"): 201,
    ("DELETE", "/api/v1/groups/{group}"): 204,
    ("PUT", "/api/v1/groups/{group}/members/{username}"): 200,
    ("DELETE", "/api/v1/groups/{group}/members/{username}"): 204,
    ("PUT", "/api/v1/models/{model}/groups/{group}"): 200,
    ("DELETE", "/api/v1/models/{model}/groups/{group}"): 204,
    ("GET", "/api/v1/audit"): 200,
    ("GET", "/api/v1/environments"): 200,
    # "201, the new revision; 200 when nothing changed": the admin revises "shared" to the same
    # requirements, so nothing changes.
    ("POST", "/api/v1/environments"): 200,
    ("GET", "/api/v1/environments/{name}"): 200,
    ("POST", "/api/v1/environments/prune"): 200,
    ("POST", "/api/v1/runs"): 201,
    ("GET", "/api/v1/runs"): 200,
    ("GET", "/api/v1/runs/{run_id}"): 200,
    ("GET", "/api/v1/runs/{run_id}/logs"): 200,
    ("POST", "/api/v1/runs/{run_id}/cancel"): 200,
    ("POST", "/api/v1/schedules"): 201,
    ("GET", "/api/v1/schedules"): 200,
    ("GET", "/api/v1/schedules/{schedule_id}"): 200,
    ("PUT", "/api/v1/schedules/{schedule_id}"): 200,
    ("POST", "/api/v1/schedules/{schedule_id}/pause"): 200,
    ("POST", "/api/v1/schedules/{schedule_id}/resume"): 200,
    ("POST", "/api/v1/schedules/{schedule_id}/take-over"): 200,
    ("DELETE", "/api/v1/schedules/{schedule_id}"): 204,
}

#: Routes whose body is the project archive, with their query parameters.
UPLOADS: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/api/v1/models/{model}/versions"): {"file": "calc.py", "function": "add"},
    ("POST", "/api/v1/runs"): {
        "command": ["python", "calc.py"],
        "model": "m",
        "file": "calc.py",
        "function": "add",
    },
    ("POST", "/api/v1/schedules"): {
        "command": ["python", "calc.py"],
        "every": "1h",
        "model": "m",
        "file": "calc.py",
        "function": "add",
    },
    ("PUT", "/api/v1/schedules/{schedule_id}"): {
        "command": ["python", "calc.py"],
        "every": "2h",
        "model": "m",
        "file": "calc.py",
        "function": "add",
    },
}

#: Server-level needs of the named-environment actions (permissions.ENVIRONMENT_PERMISSIONS).
_ENVIRONMENT_NEEDS = {"user": AUTHENTICATED, "admin": ADMIN}

BODIES: dict[tuple[str, str], dict[str, object]] = {
    ("POST", "/api/v1/models"): {"name": "fresh-model"},
    ("PATCH", "/api/v1/models/{model}"): {"description": "changed"},
    ("PATCH", "/api/v1/models/{model}/versions/{number}"): {"batch_max_size": 4},
    ("POST", "/api/v1/models/{model}/deploy"): {"version": 1},
    ("PUT", "/api/v1/models/{model}/labels/{label}"): {"version": 1},
    ("PUT", "/api/v1/models/{model}/env/{name}"): {"value": "x"},
    ("POST", "/api/v1/users"): {"username": "newcomer", "password": "a-long-password"},
    ("POST", "/api/v1/keys"): {"name": "laptop"},
    ("POST", "/api/v1/models/{model}/tokens"): {"name": "billing"},
    ("PATCH", "/api/v1/models/{model}/tokens/{token_id}"): {"rate": "5/s"},
    ("PUT", "/api/v1/models/{model}/collaborators/{username}"): {"role": "viewer"},
    ("PATCH", "/api/v1/models/{model}/access"): {"visibility": "private"},
    ("POST", "/api/v1/models/{model}/transfer"): {"user": "target"},
    ("POST", "/api/v1/login"): {"username": "owner", "password": "owner-password"},
    # The same requirements as the prepared environment: nothing to resolve, so no network.
    ("POST", "/api/v1/environments"): {"name": "shared", "requirements": ""},
    ("POST", "/api/v1/models/{model}/test"): {"data": {"x": 1, "y": 2}},
    ("PUT", "/api/v1/models/{model}/webhook"): {"url": "http://127.0.0.1:9/hook"},
    ("POST", "/api/v1/groups"): {"name": "fresh-group"},
    ("PUT", "/api/v1/models/{model}/groups/{group}"): {"role": "editor"},
}


def _captured(home: Path, model_id: str) -> None:
    """Captured calls of version 1 in the documented layout: two days ago and now."""
    now = dt.datetime.now(dt.timezone.utc)
    for moment in (now - dt.timedelta(days=2), now):
        folder = home / "captures" / f"model={model_id}" / "version=1"
        folder = folder / f"hour={moment.strftime('%Y-%m-%dT%H')}"
        folder.mkdir(parents=True, exist_ok=True)
        bodies = [{"data": {"x": float(i), "y": float(i % 3)}} for i in range(20)]
        table = pa.table(
            {
                "time": pa.array([moment] * len(bodies), pa.timestamp("ms", tz="UTC")),
                "request_id": [f"R{i:015d}" for i in range(len(bodies))],
                "version": pa.array([1] * len(bodies), pa.int32()),
                "version_id": ["v"] * len(bodies),
                "input": [json.dumps(b) for b in bodies],
                "output": ["3"] * len(bodies),
            }
        )
        pq.write_table(table, folder / "part-1-1-1.parquet")


def _routes() -> set[tuple[str, str]]:
    found = {("GET", urls.OPENAPI)}
    for prefix, router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods - {"HEAD", "OPTIONS"}:
                found.add((method, prefix + route.path))
    return found


def test_every_route_is_classified_and_every_action_is_in_the_table() -> None:
    assert _routes() - {("GET", urls.OPENAPI)} == set(ROUTE_NEEDS) == set(SUCCESS)
    actions = {need for need in ROUTE_NEEDS.values()} - {PUBLIC, AUTHENTICATED, ADMIN}
    # Revising is creating a name that exists: the POST route, checked against its creator.
    assert actions | {"revise-environment"} == set(LEAST_ROLE) | set(ENVIRONMENT_PERMISSIONS)


@dataclass
class State:
    home: Path
    keys: dict[str, str]
    ids: dict[str, str]


async def _prepare(home: Path) -> State:
    settings = load_settings(environ={"MODELHOST_HOME": str(home)})
    app = create_app(settings, backend=FakeBackend())
    services = app.services
    keys = {"admin": bootstrap_admin(services.repo, home, settings.url) or ""}
    for name in (
        "owner",
        "editor",
        "viewer",
        "gviewer",
        "geditor",
        "mixed",
        "stranger",
        "target",
        "victim",
    ):
        user = services.repo.create_user(
            name, is_admin=False, password_hash=access_control._hasher.hash(f"{name}-password")
        )
        keys[name] = access_control.create_api_key(services, user, "test")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {keys['owner']}"},
    ) as http:
        for _ in range(2):  # two versions, so that rollback has somewhere to go
            published = await http.post(
                "/api/v1/models/m/versions",
                params={"file": "calc.py", "function": "add"},
                content=calc_archive(),
                headers={"Content-Type": "application/gzip"},
            )
            assert published.status_code == 201, published.text
            await services.reconciler.reconcile_once()
            await services.reconciler.reconcile_once()
        for path, body in [
            ("/api/v1/models/m/collaborators/editor", {"role": "editor"}),
            ("/api/v1/models/m/collaborators/viewer", {"role": "viewer"}),
            ("/api/v1/models/m/collaborators/target", {"role": "viewer"}),
            ("/api/v1/models/m/collaborators/mixed", {"role": "viewer"}),
            ("/api/v1/models/m/labels/prod", {"version": 1}),
            ("/api/v1/models/m/env/VAR", {"value": "1"}),
        ]:
            assert (await http.put(path, json=body)).status_code == 200
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        for group, role, members in (
            ("readers", "viewer", ("gviewer",)),
            ("builders", "editor", ("geditor", "mixed")),
            ("team", "viewer", ("victim",)),  # the group the group routes act on
        ):
            made = await http.post("/api/v1/groups", json={"name": group}, headers=admin)
            assert made.status_code == 201, made.text
            for member in members:
                added = await http.put(f"/api/v1/groups/{group}/members/{member}", headers=admin)
                assert added.status_code == 200, added.text
            granted = await http.put(f"/api/v1/models/m/groups/{group}", json={"role": role})
            assert granted.status_code == 200, granted.text
        token = (await http.post("/api/v1/models/m/tokens", json={"name": "t"})).json()["id"]
        ids = {"token_id": token}
        for name, path in (("run_id", "/api/v1/runs"), ("schedule_id", "/api/v1/schedules")):
            created = await http.post(
                path,
                params=UPLOADS[("POST", path)],  # type: ignore[arg-type]
                content=calc_archive(),
                headers={"Content-Type": "application/gzip"},
            )
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]  # the run stays queued: no run loop here
    # Named environments are server-wide: created by an admin, so only admins may revise it.
    admin = services.repo.find_user("admin")
    assert admin is not None
    environment_ops.create(services, admin, name="shared", requirements="")
    for user in services.repo.list_users():  # each actor revokes a key of their own
        ids[f"key_id:{user.username}"] = services.repo.list_api_keys(user.id)[0].id
    await services.reconciler.close()
    services.repo.engine.dispose()
    return State(home, keys, ids)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> State:
    return anyio.run(_prepare, tmp_path_factory.mktemp("template") / "home")


def _expected(need: str, actor: str) -> set[int] | str:
    """Allowed ("ok"), or the exact status a refusal must have."""
    if need in ENVIRONMENT_PERMISSIONS:
        if need == "create-environment" and actor not in ("admin", "anonymous"):
            return {403}  # revising the admin's "shared" environment: only its creator may
        need = _ENVIRONMENT_NEEDS[ENVIRONMENT_PERMISSIONS[need]]
    if need == PUBLIC:
        return "ok"
    if actor == "anonymous":
        return {401}
    if need == AUTHENTICATED or actor == "admin":
        return "ok"
    if need == ADMIN:
        return {403}
    if actor == "stranger":
        return {404}  # a private model the caller may not see does not exist for them
    role = ROLE_OF.get(actor, actor)  # owner, editor and viewer hold the role of the same name
    # The hand-written oracle (tests/test_permissions_table.py), not the production table.
    required = LEAST_ROLE[need]
    return "ok" if ROLE_ORDER.index(role) >= ROLE_ORDER.index(required) else {403}


def _concrete(route: tuple[str, str], state: State, actor: str) -> str:
    path = route[1]
    values = {
        "model": "m",
        "number": "1",
        "label": "prod",
        "name": "VAR",
        "username": "target",
        "token_id": state.ids["token_id"],
        "group": "team",
        "run_id": state.ids["run_id"],
        "schedule_id": state.ids["schedule_id"],
        "key_id": state.ids.get(f"key_id:{actor}", "no-such-key"),
    }
    if path == "/api/v1/environments/{name}":
        values["name"] = "shared"
    if path in ("/api/v1/users/{username}/disable", "/api/v1/groups/{group}/members/{username}"):
        values["username"] = "victim"  # a member of team
    if route == ("PUT", "/api/v1/groups/{group}/members/{username}"):
        values["username"] = "target"  # not a member of team yet, so adding them succeeds
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    return path


CASES = sorted(itertools.product(sorted(ROUTE_NEEDS), ACTORS))


@pytest.mark.parametrize(("route", "actor"), CASES, ids=[f"{r[0]} {r[1]} as {a}" for r, a in CASES])
def test_the_route_answers_each_actor_as_the_permission_table_says(
    prepared: State, tmp_path: Path, route: tuple[str, str], actor: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(prepared.home, home)
    method = route[0]
    expected = _expected(ROUTE_NEEDS[route], actor)

    async def call() -> httpx.Response:
        settings = load_settings(environ={"MODELHOST_HOME": str(home)})
        app = create_app(settings, backend=FakeBackend())
        headers = (
            {} if actor == "anonymous" else {"Authorization": f"Bearer {prepared.keys[actor]}"}
        )
        kwargs: dict[str, object] = {"headers": headers}
        if route in BODIES:
            kwargs["json"] = BODIES[route]
        if route in UPLOADS:
            kwargs = {
                "headers": {**headers, "Content-Type": "application/gzip"},
                "content": calc_archive(),
                "params": UPLOADS[route],
            }
        if route == ("DELETE", "/api/v1/models/{model}"):
            kwargs["params"] = {"confirm": "m"}
        if route == ("PATCH", "/api/v1/models/{model}/versions/{number}"):
            # only a batching version has limits to change: make version 1 one
            repo = app.services.repo
            found = repo.find_model("m")
            assert found is not None
            version = repo.get_version(found.id, 1)
            assert version is not None
            repo.update_version(version.id, batch_max_size=8, batch_max_wait_ms=5.0)
        if route in (
            ("GET", "/api/v1/models/{model}/captures"),
            ("POST", "/api/v1/models/{model}/captures/drift"),
        ):  # something captured: a first day, and calls after it
            found = app.services.repo.find_model("m")
            assert found is not None
            _captured(home, found.id)
            kwargs["params"] = {"version": 1, "reference": "first-day"}
        if route == ("POST", "/api/v1/models/{model}/test"):  # the call needs a running version
            await app.services.reconciler.reconcile_once()
            await app.services.reconciler.reconcile_once()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as http:
                return await http.request(method, _concrete(route, prepared, actor), **kwargs)  # type: ignore[arg-type]
        finally:
            await app.services.reconciler.close()
            app.services.repo.engine.dispose()

    response = anyio.run(call)
    if expected == "ok":
        assert response.status_code == SUCCESS[route], response.text
    else:
        assert response.status_code in expected, response.text
        assert response.json()["error"]["code"] in {
            "unauthenticated",
            "forbidden",
            "model_not_found",
            "run_not_found",
            "schedule_not_found",
        }
