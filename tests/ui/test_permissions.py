"""Every UI route x (admin, owner, editor, viewer, unrelated user, anonymous), matched against
the permission table, like tests/api/test_permissions.py for the API. Each case runs on its own
copy of one prepared server state, so destructive actions cannot change what later cases see.
Requests ask for the JSON twin, whose statuses are the API's."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute

from modelhost.app import UI_ROUTERS, create_app
from modelhost.operations import access_control
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from modelhost.ui import actions, session
from tests.api.test_permissions import _captured
from tests.fakes import FakeBackend
from tests.helpers import calc_archive
from tests.test_permissions_table import LEAST_ROLE, ROLE_ORDER
from tests.ui.conftest import CSRF, session_cookies

PUBLIC, AUTHENTICATED, ADMIN = "public", "authenticated", "admin"
ACTORS = ("admin", "owner", "editor", "viewer", "stranger", "anonymous")
ACTION_ROUTE = ("POST", "/ui/models/{model}/actions/{what}")
GROUP_ACTION_ROUTE = ("POST", "/ui/groups/actions/{what}")

#: Every UI route (and every form action) and what it needs.
UI_ROUTE_NEEDS: dict[tuple[str, str], str] = {
    ("GET", "/ui/"): PUBLIC,  # a redirect to the models list
    ("GET", "/ui/sign-in"): PUBLIC,
    ("POST", "/ui/sign-in"): PUBLIC,
    ("POST", "/ui/sign-out"): PUBLIC,
    ("GET", "/ui/models"): AUTHENTICATED,
    ("GET", "/ui/models/{model}"): "view",
    ("GET", "/ui/models/{model}/versions"): "view",
    ("GET", "/ui/models/{model}/versions/{number}"): "view",
    ("GET", "/ui/models/{model}/instances"): "view",
    ("GET", "/ui/models/{model}/logs"): "view-logs",
    ("GET", "/ui/models/{model}/metrics"): "view",
    ("GET", "/ui/models/{model}/docs"): "view",
    ("GET", "/ui/models/{model}/settings"): "view",
    ("GET", "/ui/models/{model}/audit"): "view-audit",
    ("GET", "/ui/audit"): ADMIN,
    ("GET", "/ui/publish"): AUTHENTICATED,
    ("POST", "/ui/publish"): AUTHENTICATED,
    ("POST", "/ui/models/{model}/test"): "test",
    ("GET", "/ui/models/{model}/predictions/{prediction_id}"): "test",
    ("GET", "/ui/groups"): AUTHENTICATED,
    ("GET", "/ui/models/{model}/drift"): "read-captures",
    ("POST", "/ui/models/{model}/drift"): "read-captures",
}
#: The status each UI route answers a JSON-twin request that succeeds (docs/ui.md, "The JSON
#: twin"): a page, or a form action's ``{"result", "message"}``, is 200; the publish form's is
#: the API publish's 201; ``/ui/``, signing in and signing out redirect (303) whatever is asked.
SUCCESS: dict[tuple[str, str], int] = {
    # pages answer 200 (docs/ui.md); the drift report's upload is a page too
    ("GET", "/ui/models/{model}/docs"): 200,
    ("GET", "/ui/models/{model}/drift"): 200,
    ("POST", "/ui/models/{model}/drift"): 200,
    ("GET", "/ui/models/{model}/predictions/{prediction_id}"): 200,
    ("GET", "/ui/"): 303,
    ("GET", "/ui/sign-in"): 200,
    ("POST", "/ui/sign-in"): 303,
    ("POST", "/ui/sign-out"): 303,
    ("GET", "/ui/models"): 200,
    ("GET", "/ui/models/{model}"): 200,
    ("GET", "/ui/models/{model}/versions"): 200,
    ("GET", "/ui/models/{model}/versions/{number}"): 200,
    ("GET", "/ui/models/{model}/instances"): 200,
    ("GET", "/ui/models/{model}/logs"): 200,
    ("GET", "/ui/models/{model}/metrics"): 200,
    ("GET", "/ui/models/{model}/settings"): 200,
    ("GET", "/ui/models/{model}/audit"): 200,
    ("GET", "/ui/audit"): 200,
    ("GET", "/ui/publish"): 200,
    ("POST", "/ui/publish"): 201,
    ("POST", "/ui/models/{model}/test"): 200,
    ("GET", "/ui/groups"): 200,
    ACTION_ROUTE: 200,
    GROUP_ACTION_ROUTE: 200,
}
ACTION_NEEDS: dict[str, str] = {
    "deploy": "deploy",
    "rollback": "deploy",
    "promote": "deploy",
    "label": "deploy",
    "label-delete": "deploy",
    "stop": "deploy",
    "start": "deploy",
    "restart": "deploy",
    "settings": "manage-settings",
    "batching": "manage-settings",
    "env-set": "manage-env",
    "env-unset": "manage-env",
    "access": "change-access",
    "token-create": "manage-tokens",
    "token-revoke": "manage-tokens",
    "token-regenerate": "manage-tokens",
    "token-update": "manage-tokens",
    "collaborator-set": "manage-collaborators",
    "collaborator-remove": "manage-collaborators",
    "group-role-set": "manage-collaborators",
    "group-role-remove": "manage-collaborators",
    "transfer": "transfer",
    "unpublish": "unpublish",
}
FORMS: dict[str, dict[str, str]] = {
    "deploy": {"version": "1"},
    "label": {"label": "staging", "version": "1"},
    "label-delete": {"label": "prod"},
    "settings": {"description": "changed"},
    "batching": {"version": "1", "batch_max_size": "4"},
    "env-set": {"name": "OTHER", "value": "x"},
    "env-unset": {"name": "VAR"},
    "access": {"visibility": "private"},
    "token-create": {"name": "billing"},
    "token-update": {"rate": "5/s", "quota": "100/day"},
    "collaborator-set": {"user": "target", "role": "editor"},
    "collaborator-remove": {"user": "target"},
    "group-role-set": {"group": "team", "role": "editor"},
    "group-role-remove": {"group": "team"},
    "transfer": {"user": "target"},
}


#: every group action (admins only), with its form
GROUP_ACTION_FORMS: dict[str, dict[str, str]] = {
    "group-create": {"group": "fresh-group"},
    "group-delete": {"group": "team"},
    "group-member-add": {"group": "team", "user": "target"},
    "group-member-remove": {"group": "team", "user": "viewer"},
}


def ui_routes() -> set[tuple[str, str]]:
    found = set()
    for router in UI_ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            for method in route.methods - {"HEAD", "OPTIONS"}:
                found.add((method, route.path))
    return found


def test_every_ui_route_and_form_action_is_classified() -> None:
    assert ui_routes() == set(UI_ROUTE_NEEDS) | {ACTION_ROUTE, GROUP_ACTION_ROUTE} == set(SUCCESS)
    assert set(ACTION_NEEDS) == set(actions.ACTIONS) | set(actions.TOKEN_ACTIONS)
    assert set(GROUP_ACTION_FORMS) == set(actions.GROUP_ACTIONS)
    used = set(UI_ROUTE_NEEDS.values()) | set(ACTION_NEEDS.values())
    assert used - {PUBLIC, AUTHENTICATED, ADMIN} <= set(LEAST_ROLE)


@dataclass
class State:
    home: Path
    keys: dict[str, str]
    token_id: str
    prediction_id: str


async def _prepare(home: Path) -> State:
    settings = load_settings(environ={"MODELHOST_HOME": str(home)})
    app = create_app(settings, backend=FakeBackend())
    services = app.services
    keys = {"admin": bootstrap_admin(services.repo, home, settings.url) or ""}
    for name in ("owner", "editor", "viewer", "stranger", "target"):
        user = services.repo.create_user(name, is_admin=False)
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
            ("/api/v1/models/m/labels/prod", {"version": 1}),
            ("/api/v1/models/m/env/VAR", {"value": "1"}),
        ]:
            assert (await http.put(path, json=body)).status_code == 200
        admin = {"Authorization": f"Bearer {keys['admin']}"}
        assert (await http.post("/api/v1/groups", json={"name": "team"}, headers=admin)).is_success
        assert (await http.put("/api/v1/groups/team/members/viewer", headers=admin)).is_success
        granted = await http.put("/api/v1/models/m/groups/team", json={"role": "viewer"})
        assert granted.status_code == 200, granted.text
        token = (await http.post("/api/v1/models/m/tokens", json={"name": "t"})).json()["id"]
    model = services.repo.find_model("m")
    assert model is not None
    prediction = services.repo.add_prediction(
        model_id=model.id,
        route="latest",
        body='{"data": {"x": 1, "y": 2}}',
        request_id="R",
        token_sha256=None,
        user_id=None,
    )
    await services.reconciler.close()
    services.repo.engine.dispose()
    return State(home, keys, token, prediction.id)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> State:
    return anyio.run(_prepare, tmp_path_factory.mktemp("ui-template") / "home")


def _expected(need: str, actor: str) -> set[int] | str:
    if need == PUBLIC:
        return "ok"
    if actor == "anonymous":
        return {401}
    if need == AUTHENTICATED or actor == "admin":
        return "ok"
    if need == ADMIN:
        return {403}
    if actor == "stranger":
        return {404}
    return "ok" if ROLE_ORDER.index(actor) >= ROLE_ORDER.index(LEAST_ROLE[need]) else {403}


def _cases() -> list[tuple[str, str, str, str]]:
    routes = [(m, p, "", need) for (m, p), need in UI_ROUTE_NEEDS.items()]
    routes += [(*ACTION_ROUTE, what, need) for what, need in ACTION_NEEDS.items()]
    routes += [(*GROUP_ACTION_ROUTE, what, ADMIN) for what in GROUP_ACTION_FORMS]
    return [(*r, a) for r, a in itertools.product(sorted(routes), ACTORS)]  # type: ignore[misc]


CASES = _cases()


@pytest.mark.parametrize(
    ("method", "path", "what", "need", "actor"),
    CASES,
    ids=[f"{c[0]} {c[1]}{' ' + c[2] if c[2] else ''} as {c[4]}" for c in CASES],
)
def test_the_ui_route_answers_each_actor_as_the_permission_table_says(
    prepared: State, tmp_path: Path, method: str, path: str, what: str, need: str, actor: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(prepared.home, home)
    expected = _expected(need, actor)
    concrete = path.replace("{model}", "m").replace("{number}", "1").replace("{what}", what)
    concrete = concrete.replace("{prediction_id}", prepared.prediction_id)
    form = dict(GROUP_ACTION_FORMS if path == GROUP_ACTION_ROUTE[1] else FORMS).get(what, {})
    form = dict(form)
    if what in ("token-revoke", "token-regenerate", "token-update"):
        form["token_id"] = prepared.token_id
    if path == "/ui/publish" and method == "POST":
        form = {"model": "fresh", "file": "calc.py", "function": "add"}
    if path == "/ui/sign-in":
        form = {"api_key": prepared.keys["viewer"]}  # anyone may sign in with valid credentials

    async def call() -> httpx.Response:
        settings = load_settings(environ={"MODELHOST_HOME": str(home)})
        app = create_app(settings, backend=FakeBackend())
        cookies = {session.CSRF_COOKIE: CSRF}
        if actor != "anonymous":
            cookies = session_cookies(home, prepared.keys[actor])
        headers = {"Accept": "application/json", "X-CSRF-Token": CSRF}
        files = {"archive": ("p.tar.gz", calc_archive(), "application/gzip")}
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t", cookies=cookies
            ) as http:
                if method == "GET":
                    return await http.get(concrete, headers=headers)
                if path == "/ui/publish":
                    return await http.post(concrete, headers=headers, data=form, files=files)
                if what == "batching":  # only a batching version has limits: make 1 one
                    repo = app.services.repo
                    found = repo.find_model("m")
                    assert found is not None
                    version = repo.get_version(found.id, 1)
                    assert version is not None
                    repo.update_version(version.id, batch_max_size=8, batch_max_wait_ms=5.0)
                if path == "/ui/models/{model}/drift":  # captured calls, and a reference
                    found = app.services.repo.find_model("m")
                    assert found is not None
                    _captured(home, found.id)
                    reference = "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(20))
                    upload = {"reference": ("reference.csv", reference.encode(), "text/csv")}
                    return await http.post(
                        concrete, headers=headers, data={"version": "1"}, files=upload
                    )
                if path == "/ui/models/{model}/test":  # the call needs a running version
                    await app.services.reconciler.reconcile_once()
                    await app.services.reconciler.reconcile_once()
                    body = {"data": {"x": 1, "y": 2}}
                    return await http.post(concrete, headers=headers, json=body)
                return await http.post(concrete, headers=headers, data=form)
        finally:
            await app.services.reconciler.close()
            app.services.repo.engine.dispose()

    response = anyio.run(call)
    if expected == "ok":
        assert response.status_code == SUCCESS[(method, path)], response.text
    else:
        assert response.status_code in expected, response.text
        assert response.json()["error"]["code"] in {
            "unauthenticated",
            "forbidden",
            "model_not_found",
        }
