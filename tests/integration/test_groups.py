"""Groups on a real server, through the CLI and the client (issue 20, point 3): admins make
groups and choose their members, an owner gives a group a role on a model, and a member's role
is the highest of their own and their groups'. Every change is in the audit log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from modelhost import errors
from modelhost.client import Client
from tests.helpers import PROJECTS, Server, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("groups") / "home") as running:
        admin = running.client()
        for name in ("builder", "deployer", "outsider"):
            admin.add_user(name, f"{name}-password")
        admin.publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
        admin.set_access("calc", visibility="private")
        yield running


def _as(server: Server, name: str) -> Client:
    return Client.login(server.url, name, f"{name}-password")


def test_an_admin_makes_groups_and_chooses_members_from_the_cli(server: Server) -> None:
    made = server.cli("groups", "create", "deployers", check=True)
    assert "Group deployers created" in made.stdout
    server.cli("groups", "create", "scratch", check=True)
    added = server.cli("groups", "add", "deployers", "deployer", check=True)
    assert added.stdout.strip() == "deployer is in deployers."
    listed = server.cli("groups", "list", check=True).stdout.splitlines()
    assert listed[0].split() == ["GROUP", "MEMBERS"]
    assert ["deployers", "deployer"] in [line.split() for line in listed]
    assert server.cli("groups", "delete", "scratch", check=True).returncode == 0
    assert [g["name"] for g in server.client().groups()] == ["deployers"]


def test_a_group_role_gives_its_members_that_role_and_no_more(server: Server) -> None:
    with _as(server, "deployer") as deployer:
        with pytest.raises(errors.ModelNotFound):  # private, and no role yet
            deployer.model("calc")
        server.cli("collaborators", "add", "calc", "deployers", "--group", "--role", "viewer")
        assert deployer.model("calc")["name"] == "calc"
        with pytest.raises(errors.Forbidden) as refused:
            deployer.restart("calc")
        assert "Your role on 'calc' is viewer" in refused.value.message
        server.cli(
            "collaborators", "add", "calc", "deployers", "--group", "--role", "editor", check=True
        )
        deployer.restart("calc")  # editors may


def test_a_users_role_is_the_highest_of_their_own_and_their_groups(server: Server) -> None:
    admin = server.client()
    admin.add_group_member("deployers", "builder")
    admin.set_collaborator("calc", "builder", "viewer")  # their own role is lower
    with _as(server, "builder") as builder:
        builder.restart("calc")  # editor through deployers
        admin.remove_group_member("deployers", "builder")
        with pytest.raises(errors.Forbidden):
            builder.restart("calc")  # back to their own viewer role
        assert builder.model("calc")["name"] == "calc"


def test_the_collaborators_list_shows_the_groups(server: Server) -> None:
    listed = server.cli("collaborators", "list", "calc", check=True).stdout.splitlines()
    assert listed[0].split() == ["NAME", "KIND", "ROLE"]
    assert ["deployers", "group", "editor"] in [line.split() for line in listed]


def test_removing_the_groups_role_takes_it_from_its_members(server: Server) -> None:
    server.cli("collaborators", "remove", "calc", "deployers", "--group", check=True)
    assert server.client().group_roles("calc") == []
    with _as(server, "deployer") as deployer, pytest.raises(errors.ModelNotFound):
        deployer.model("calc")


def test_only_admins_change_groups_and_each_mistake_is_one_error_line(server: Server) -> None:
    with _as(server, "outsider") as outsider:
        with pytest.raises(errors.Forbidden) as refused:
            outsider.create_group("mine")
        assert refused.value.message == "Only server admins can create groups."
        assert [g["name"] for g in outsider.groups()] == ["deployers"]  # but may list them
    for args, message in [
        (("groups", "create", "Bad Name"), "'Bad Name' is not a valid group name"),
        (("groups", "create", "deployers"), "There is a group 'deployers' already."),
        (("groups", "add", "nobody-group", "builder"), "There is no group 'nobody-group'"),
        (("groups", "add", "deployers", "nobody"), "There is no user 'nobody'"),
        (("groups", "add", "deployers", "deployer"), "'deployer' is in the group 'deployers'"),
        (("groups", "remove", "deployers", "outsider"), "'outsider' is not in the group"),
        (
            ("collaborators", "add", "calc", "deployers", "--group", "--role", "owner"),
            "Invalid value for '--role'",
        ),
    ]:
        done = server.cli(*args)
        assert done.returncode in (1, 2), done
        assert message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_every_group_change_is_in_the_audit_log(server: Server) -> None:
    actions = {e["action"] for e in server.client().audit()}
    assert {
        "group-create",
        "group-delete",
        "group-member-add",
        "group-member-remove",
        "group-role-set",
        "group-role-remove",
    } <= actions
    refused = server.client().audit(action="group-create", actor="outsider")
    assert refused[0]["outcome"] == "denied"
