"""Users, tokens, visibility and the audit log through a real server, as users meet them."""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelhost import Client, errors
from tests.helpers import PROJECTS, Server, database_dump, running_server, wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
SECRETS: list[str] = []  # every secret issued in this module, grepped for at the end


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, server_database: dict[str, str]
) -> Iterator[Server]:
    """A server with the product's defaults (new models need an access token), on SQLite and
    on PostgreSQL."""
    home = tmp_path_factory.mktemp("access") / "home"
    env = {"MODELHOST_DEFAULT_INVOCATION_MODE": "token", **server_database}
    with running_server(home, env) as running:
        SECRETS.append(running.api_key)
        yield running


@pytest.fixture(scope="module")
def alice(server: Server) -> Iterator[Client]:
    server.client().add_user("alice", PASSWORD)
    SECRETS.append(PASSWORD)
    client = Client.login(server.url, "alice", PASSWORD)
    SECRETS.append(client.api_key or "")
    yield client
    client.close()


def _call(server: Server, model: str, auth: object = None, **kwargs: object) -> httpx.Response:
    return httpx.post(
        f"{server.url}/models/{model}/latest/model",
        json={"data": {"x": 1, "y": 2}},
        auth=auth,
        timeout=30,
        **kwargs,
    )  # type: ignore[arg-type]


def test_new_models_need_a_token_and_accept_it_as_basic_or_bearer(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc" / "calc.py:add", name="guarded")
    refused = _call(server, "guarded")
    assert refused.status_code == 401
    assert "Basic" in refused.headers["www-authenticate"]
    assert "needs an access token" in refused.json()["error"]["message"]

    token = client.create_token("guarded", "billing-service")["token"]
    SECRETS.append(token)
    assert token.startswith("mht_")
    wait_until(lambda: _call(server, "guarded", auth=(token, token)).status_code == 200)
    bearer = _call(server, "guarded", headers={"Authorization": f"Bearer {token}"})
    assert bearer.json()["result"] == 3
    assert client.predict("guarded", data={"x": 2, "y": 2}, token=token).result == 4
    in_url = httpx.post(
        f"{server.url}/models/guarded/latest/model?token={token}",
        json={"data": {"x": 1, "y": 2}},
        auth=(token, token),
    )
    assert in_url.status_code == 400
    assert "in the URL are refused" in in_url.json()["error"]["message"]
    assert [t["name"] for t in client.tokens("guarded")] == ["billing-service"]
    assert "token" not in client.tokens("guarded")[0]


def test_the_cli_calls_a_guarded_model_with_a_token_and_says_how_without(
    server: Server,
) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc" / "calc.py:add", name="cli-guarded")
    token = server.cli("tokens", "create", "cli-guarded", "--name", "cli", check=True)
    secret = token.stdout.strip()
    SECRETS.append(secret)
    assert secret.startswith("mht_")
    assert "not shown again" in token.stderr
    missing = server.cli("call", "cli-guarded", "--data", '{"x": 1, "y": 1}')
    assert missing.returncode == 1
    assert "--token TOKEN" in missing.stderr
    called = wait_until(
        lambda: (
            (
                r := server.cli(
                    "call", "cli-guarded", "--data", '{"x": 1, "y": 1}', "--token", secret
                )
            ).returncode
            == 0
            and r
        )
    )
    assert called.stdout.strip() == "2"


def test_token_and_access_changes_take_effect_before_the_api_answers(server: Server) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc" / "calc.py:add", name="revocable")
    first = client.create_token("revocable", "first")
    SECRETS.append(first["token"])
    wait_until(lambda: _call(server, "revocable", auth=(first["token"],) * 2).status_code == 200)

    for attempt in range(5):  # no waiting anywhere: each answer already reflects the change
        made = client.create_token("revocable", f"made-{attempt}")
        SECRETS.append(made["token"])
        assert _call(server, "revocable", auth=(made["token"],) * 2).status_code == 200
        client.revoke_token("revocable", made["id"])
        assert _call(server, "revocable", auth=(made["token"],) * 2).status_code == 401
    assert _call(server, "revocable", auth=(first["token"],) * 2).status_code == 200

    fresh = client.regenerate_token("revocable", first["id"])
    SECRETS.append(fresh["token"])
    assert fresh["id"] == first["id"]
    assert _call(server, "revocable", auth=(first["token"],) * 2).status_code == 401
    assert _call(server, "revocable", auth=(fresh["token"],) * 2).status_code == 200

    client.set_access("revocable", invocation="public")
    assert _call(server, "revocable").status_code == 200
    client.set_access("revocable", invocation="token")
    assert _call(server, "revocable").status_code == 401


def test_private_models_are_invisible_to_others_and_public_ones_read_only(
    server: Server, alice: Client
) -> None:
    admin = server.client()
    admin.publish(PROJECTS / "calc" / "calc.py:add", name="secret-model")
    assert "secret-model" not in [m["name"] for m in alice.models()]
    with pytest.raises(errors.ModelNotFound):
        alice.model("secret-model")
    with pytest.raises(errors.ModelNotFound):
        alice.deploy("secret-model", 1)

    admin.set_access("secret-model", visibility="public")
    assert "secret-model" in [m["name"] for m in alice.models()]
    assert alice.model("secret-model")["visibility"] == "public"
    with pytest.raises(errors.Forbidden, match="ask its owner"):
        alice.deploy("secret-model", 1)
    with pytest.raises(errors.Forbidden):
        alice.logs("secret-model")
    with pytest.raises(errors.Forbidden):  # variables are for collaborators, even if public
        alice.env("secret-model")

    admin.set_collaborator("secret-model", "alice", "editor")
    alice.deploy("secret-model", 1)
    with pytest.raises(errors.Forbidden, match="needs owner"):
        alice.set_access("secret-model", visibility="private")
    admin.transfer("secret-model", "alice")
    assert alice.model("secret-model")["owner"] == "alice"
    roles = {c["user"]: c["role"] for c in alice.collaborators("secret-model")}
    assert roles == {"alice": "owner", "admin": "editor"}


def test_users_publish_their_own_models_and_admins_manage_users(
    server: Server, alice: Client
) -> None:
    alice.publish(PROJECTS / "calc" / "calc.py:add", name="alices-model")
    assert alice.model("alices-model")["owner"] == "alice"
    with pytest.raises(errors.Forbidden, match="Only server admins"):
        alice.users()
    with pytest.raises(errors.Forbidden):
        alice.add_user("mallory", PASSWORD)
    with pytest.raises(errors.BadRequest, match="at least 10"):
        server.client().add_user("bob", "short")

    key = alice.create_key("laptop", expires_in_days=30)
    SECRETS.append(key)
    with Client(server.url, key) as laptop:
        assert laptop.me()["username"] == "alice"
        laptop_id = next(k["id"] for k in alice.api_keys() if k["name"] == "laptop")
        alice.revoke_key(laptop_id)
        with pytest.raises(errors.Unauthenticated, match="revoked"):
            laptop.me()

    server.client().add_user("carol", PASSWORD)
    with Client.login(server.url, "carol", PASSWORD) as carol:
        SECRETS.append(carol.api_key or "")
        server.client().disable_user("carol")
        with pytest.raises(errors.Unauthenticated):
            carol.me()
    assert {"alice": False, "carol": True}.items() <= {
        u["username"]: u["disabled"] for u in server.client().users()
    }.items()


def test_cli_login_saves_credentials_only_the_user_can_read(server: Server, tmp_path: Path) -> None:
    server.client().add_user("dave", PASSWORD)
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path), "MODELHOST_HOME": str(tmp_path)}
    env.pop("MODELHOST_URL", None)
    login = subprocess.run(
        [sys.executable, "-m", "modelhost", "login", server.url, "--username", "dave"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert login.returncode == 0, login.stderr
    saved = tmp_path / "modelhost" / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    SECRETS.append(__import__("json").loads(saved.read_text())["api_key"])
    listed = subprocess.run(
        [sys.executable, "-m", "modelhost", "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("NAME")


def test_every_management_action_leaves_an_audit_event(server: Server, alice: Client) -> None:
    client = server.client()
    client.publish(PROJECTS / "calc" / "calc.py:add", name="audited")
    client.publish(PROJECTS / "calc" / "calc.py:add", name="audited")
    steps = [
        lambda: client.deploy("audited", 1),
        lambda: client.deploy("audited", 2),
        lambda: client.rollback("audited"),
        lambda: client.promote("audited", 2),
        lambda: client.set_label("audited", "staging", 1),
        lambda: client.scale("audited", 1),
        lambda: client.update_model("audited", timeout_seconds=30),
        lambda: client.set_env("audited", "SECRET_THING", "hunter2-value", secret=True),
        lambda: client.unset_env("audited", "SECRET_THING"),
        lambda: SECRETS.append(client.create_token("audited", "t")["token"]),
        lambda: client.revoke_token("audited", client.tokens("audited")[0]["id"]),
        lambda: client.set_collaborator("audited", "alice", "viewer"),
        lambda: client.remove_collaborator("audited", "alice"),
        lambda: client.set_access("audited", visibility="public", invocation="token"),
        lambda: client.stop("audited"),
        lambda: client.start("audited"),
        lambda: client.restart("audited"),
    ]
    SECRETS.append("hunter2-value")
    for step in steps:
        step()
    _call(server, "audited")  # a denied invocation (no token)
    with pytest.raises(errors.Forbidden):  # a refused action is audited under its own name
        alice.deploy("audited", 1)
    wait_until(lambda: any(e["action"] == "invoke" for e in client.audit("audited")), timeout=5)

    events = client.audit("audited")
    actions = {e["action"] for e in events}
    assert {
        "publish",
        "deploy",
        "rollback",
        "promote",
        "label-set",
        "settings-change",
        "env-set",
        "env-unset",
        "token-create",
        "token-revoke",
        "collaborator-set",
        "collaborator-remove",
        "access-change",
        "stop",
        "start",
        "restart",
        "invoke",
    } <= actions
    for event in events:
        assert event["time"].endswith("Z")
        assert event["model"] == "audited"
        assert event["source_ip"] == "127.0.0.1"
        assert event["outcome"] in {"success", "denied", "failed"}
        assert event["request_id"]
    env_set = next(e for e in events if e["action"] == "env-set")
    assert env_set["detail"] == {"name": "SECRET_THING", "secret": True}
    assert next(e for e in events if e["action"] == "invoke")["outcome"] == "denied"
    refused = next(e for e in events if e["actor"] == "alice")
    assert (refused["action"], refused["outcome"]) == ("deploy", "denied")
    assert refused["detail"]["needs"] == "deploy"
    publishes = [e for e in events if e["action"] == "publish"]
    assert sorted(e["version"] for e in publishes) == [1, 2]

    only_env = client.audit("audited", action="env-set")
    assert [e["action"] for e in only_env] == ["env-set"]
    assert client.audit("audited", actor="nobody") == []
    assert client.audit("audited", since="2100-01-01T00:00:00") == []
    rows = list(csv.DictReader(io.StringIO(client.audit("audited", format="csv"))))
    assert len(rows) == len(events)
    assert {"time", "actor", "action", "model", "outcome", "source_ip"} <= set(rows[0])
    cli = server.cli("audit", "audited", "--format", "json", check=True)
    assert '"action": "publish"' in cli.stdout

    with pytest.raises(errors.Forbidden, match="Only server admins"):
        alice.audit()
    for method in ("PUT", "PATCH", "DELETE"):  # nothing can change or delete an event
        response = httpx.request(
            method,
            f"{server.url}/api/v1/audit",
            headers={"Authorization": f"Bearer {server.api_key}"},
        )
        assert response.status_code == 405


def test_failed_logins_are_refused_throttled_and_audited(server: Server) -> None:
    for _ in range(5):
        with pytest.raises(errors.Unauthenticated, match="wrong"):
            Client.login(server.url, "alice", "not the password")
    with pytest.raises(errors.TooManyRequests, match="Too many failed attempts"):
        Client.login(server.url, "alice", PASSWORD)
    events = server.client().audit(action="login")
    assert sum(e["outcome"] == "denied" for e in events) >= 5


def test_no_secret_ever_reaches_a_log_an_error_or_the_database(server: Server) -> None:
    """Runs last in this module: grep everything the server wrote for every issued secret."""
    assert len(SECRETS) >= 8
    dump = database_dump(server)
    texts = {"database": dump, "server log": server.log.read_text()}
    for path in server.home.rglob("*.log"):
        texts[str(path)] = path.read_text(errors="replace")
    for secret in SECRETS:
        for where, text in texts.items():
            if secret == server.api_key and where == "server log":
                continue  # the first admin key is printed once on first start, by design
            assert secret not in text, f"a secret leaked into {where}"
    assert "authorization" not in texts["server log"].lower()
