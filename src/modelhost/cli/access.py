"""Access commands: login, users, keys, tokens, access, collaborators, transfer, audit."""

from __future__ import annotations

import json
from typing import Any

import click

from modelhost.cli.connection import Connection, pass_connection
from modelhost.cli.output import format_option, print_json, table
from modelhost.client import Client
from modelhost.client._config import save_login


@click.command()
@click.argument("url")
@click.option("--username", prompt=True, help="Your user name.")
@click.option("--password", prompt=True, hide_input=True, help="Your password.")
def login(url: str, username: str, password: str) -> None:
    """Sign in to the server at URL and remember it for the CLI and the Python client."""
    with Client.login(url, username, password, key_name="cli login") as client:
        path = save_login(client.url, client.api_key or "", username)
    click.echo(f"Signed in to {url} as {username}; saved to {path} (readable only by you).")


@click.group()
def users() -> None:
    """Users of this server (admins)."""


@users.command("list")
@format_option
@pass_connection
def users_list(conn: Connection, as_json: bool) -> None:
    """List users."""
    found = conn.client.users()
    if as_json:
        print_json(found)
        return
    rows = [
        (u["username"], "admin" if u["is_admin"] else "", "disabled" if u["disabled"] else "")
        for u in found
    ]
    table(rows, ["USER", "ADMIN", "STATE"])


@users.command("add")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user a server admin.")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Initial password (at least 10 characters).",
)
@pass_connection
def users_add(conn: Connection, username: str, admin: bool, password: str) -> None:
    """Add a user; they sign in with 'modelhost login URL'."""
    added = conn.client.add_user(username, password, admin=admin)
    click.echo(f"Added {'admin ' if admin else ''}{username}.")
    if added.get("warning"):
        click.secho(f"Warning: {added['warning']}", fg="yellow", err=True)


@users.command("disable")
@click.argument("username")
@pass_connection
def users_disable(conn: Connection, username: str) -> None:
    """Disable a user: their keys stop working at once."""
    conn.client.disable_user(username)
    click.echo(f"Disabled {username}.")


@click.group()
def keys() -> None:
    """Your own API keys."""


@keys.command("list")
@format_option
@pass_connection
def keys_list(conn: Connection, as_json: bool) -> None:
    """List your API keys (never their secrets)."""
    found = conn.client.api_keys()
    if as_json:
        print_json(found)
        return
    rows = [
        (
            k["id"],
            k["name"],
            k["prefix"] + "...",
            k["expires_at"] or "",
            "revoked" if k["revoked"] else "",
        )
        for k in found
    ]
    table(rows, ["ID", "NAME", "PREFIX", "EXPIRES", "STATE"])


@keys.command("create")
@click.option("--name", required=True, help="What the key is for, such as ci.")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="Expire after N days.")
@pass_connection
def keys_create(conn: Connection, name: str, expires_in_days: int | None) -> None:
    """Create an API key; it is printed once."""
    key = conn.client.create_key(name, expires_in_days=expires_in_days)
    click.echo(key)
    click.echo("Store it now: it is not shown again.", err=True)


@keys.command("revoke")
@click.argument("key_id")
@pass_connection
def keys_revoke(conn: Connection, key_id: str) -> None:
    """Revoke one of your API keys."""
    conn.client.revoke_key(key_id)
    click.echo(f"Revoked {key_id}.")


@click.group()
def tokens() -> None:
    """Access tokens that callers of a model send."""


@tokens.command("list")
@click.argument("model")
@format_option
@pass_connection
def tokens_list(conn: Connection, model: str, as_json: bool) -> None:
    """List MODEL's tokens (never their secrets)."""
    found = conn.client.tokens(model)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            t["id"],
            t["name"],
            t["prefix"] + "...",
            t["created_at"],
            t["rate"] or "-",
            _usage(t),
            "revoked" if t["revoked"] else "",
        )
        for t in found
    ]
    table(rows, ["ID", "NAME", "PREFIX", "CREATED", "RATE", "QUOTA USED", "STATE"])


def _usage(token: Any) -> str:
    """``12/100000 day (resets 2026-12-07T00:00:00Z)``, or ``-`` without a quota."""
    usage = token["usage"]
    if not usage:
        return "-"
    return f"{usage['used']}/{usage['limit']} {usage['per']} (resets {usage['resets_at']})"


_RATE_HELP = "Calls per s, min or h, such as 50/s; over it calls get HTTP 429."
_QUOTA_HELP = "Calls per UTC day or month, such as 100000/day; over it calls get HTTP 429."


@tokens.command("create")
@click.argument("model")
@click.option("--name", required=True, help="Who the token is for, such as billing-service.")
@click.option("--rate", help=_RATE_HELP)
@click.option("--quota", help=_QUOTA_HELP)
@pass_connection
def tokens_create(
    conn: Connection, model: str, name: str, rate: str | None, quota: str | None
) -> None:
    """Create a token for MODEL; it is printed once."""
    created = conn.client.create_token(model, name, rate=rate, quota=quota)
    click.echo(created["token"])
    limits = [f"rate {created['rate']}"] if created["rate"] else []
    limits += [f"quota {created['quota']}"] if created["quota"] else []
    within = f" ({', '.join(limits)})" if limits else ""
    click.echo(f"Token {created['id']} for {name}{within}; it is not shown again.", err=True)


@tokens.command("update")
@click.argument("model")
@click.argument("token_id", metavar="TOKEN")
@click.option("--rate", help=_RATE_HELP + " 'none' removes it.")
@click.option("--quota", help=_QUOTA_HELP + " 'none' removes it.")
@pass_connection
def tokens_update(
    conn: Connection, model: str, token_id: str, rate: str | None, quota: str | None
) -> None:
    """Change the rate or quota of TOKEN (its id, or its name when unique on MODEL); calls see
    the change within a second, and the calls already used in the quota's window still count."""
    updated = conn.client.update_token(model, token_id, rate=rate, quota=quota)
    click.echo(
        f"Token {updated['name']}: rate {updated['rate'] or 'none'}, "
        f"quota {updated['quota'] or 'none'}."
    )


@tokens.command("revoke")
@click.argument("model")
@click.argument("token_id", metavar="TOKEN")
@pass_connection
def tokens_revoke(conn: Connection, model: str, token_id: str) -> None:
    """Revoke TOKEN (its id, or its name when no other active token of MODEL has it): calls
    with it fail within a second."""
    conn.client.revoke_token(model, token_id)
    click.echo(f"Revoked {token_id}.")


@tokens.command("regenerate")
@click.argument("model")
@click.argument("token_id", metavar="TOKEN")
@pass_connection
def tokens_regenerate(conn: Connection, model: str, token_id: str) -> None:
    """Give TOKEN (its id, or its name when unique on MODEL) a new secret; the old one stops
    working. The new one is printed once."""
    click.echo(conn.client.regenerate_token(model, token_id)["token"])


@click.command()
@click.argument("model")
@click.option(
    "--visibility",
    type=click.Choice(["public", "private"]),
    help="public: every signed-in user can find and view it.",
)
@click.option(
    "--invocation",
    type=click.Choice(["public", "token"]),
    help="public: anyone can call it; token: callers need an access token.",
)
@pass_connection
def access(conn: Connection, model: str, visibility: str | None, invocation: str | None) -> None:
    """Show or change who can see and who can call MODEL."""
    if visibility or invocation:
        shown = conn.client.set_access(model, visibility=visibility, invocation=invocation)
    else:
        shown = conn.client.model(model)
    click.echo(
        f"{shown['name']}: visibility {shown['visibility']}, invocation {shown['invocation_mode']}"
    )


@click.group()
def collaborators() -> None:
    """People who work on a model, and their roles."""


@collaborators.command("list")
@click.argument("model")
@format_option
@pass_connection
def collaborators_list(conn: Connection, model: str, as_json: bool) -> None:
    """List MODEL's owner, collaborators and the groups with a role on it."""
    people, teams = conn.client.collaborators(model), conn.client.group_roles(model)
    if as_json:
        print_json({"collaborators": people, "groups": teams})
        return
    rows = [(c["user"], "user", c["role"]) for c in people]
    rows += [(g["group"], "group", g["role"]) for g in teams]
    table(rows, ["NAME", "KIND", "ROLE"])


_GROUP_OPTION = click.option(
    "--group", "is_group", is_flag=True, help="NAME is a group (see 'modelhost groups list')."
)


@collaborators.command("add")
@click.argument("model")
@click.argument("name", metavar="USER")
@click.option(
    "--role", type=click.Choice(["viewer", "editor"]), default="viewer", show_default=True
)
@_GROUP_OPTION
@pass_connection
def collaborators_add(conn: Connection, model: str, name: str, role: str, is_group: bool) -> None:
    """Add USER (or, with --group, a group) to MODEL, or change their role. A user's role is
    the highest of their own and their groups' roles."""
    if is_group:
        conn.client.set_group_role(model, name, role)
        click.echo(f"The group {name} is {role} on {model}.")
        return
    conn.client.set_collaborator(model, name, role)
    click.echo(f"{name} is {role} on {model}.")


@collaborators.command("remove")
@click.argument("model")
@click.argument("name", metavar="USER")
@_GROUP_OPTION
@pass_connection
def collaborators_remove(conn: Connection, model: str, name: str, is_group: bool) -> None:
    """Remove USER (or, with --group, a group) from MODEL."""
    if is_group:
        conn.client.remove_group_role(model, name)
        click.echo(f"The group {name} removed from {model}.")
        return
    conn.client.remove_collaborator(model, name)
    click.echo(f"{name} removed from {model}.")


@click.group()
def groups() -> None:
    """Groups of users, which can hold a role on a model (server admins change them)."""


@groups.command("list")
@format_option
@pass_connection
def groups_list(conn: Connection, as_json: bool) -> None:
    """List the groups and their members."""
    found = conn.client.groups()
    if as_json:
        print_json(found)
        return
    table([(g["name"], ", ".join(g["members"]) or "-") for g in found], ["GROUP", "MEMBERS"])


@groups.command("create")
@click.argument("group")
@pass_connection
def groups_create(conn: Connection, group: str) -> None:
    """Create GROUP."""
    conn.client.create_group(group)
    click.echo(
        f"Group {group} created. Add people with 'modelhost groups add {group} USER', and give "
        f"it a role with 'modelhost collaborators add MODEL {group} --group --role editor'."
    )


@groups.command("delete")
@click.argument("group")
@pass_connection
def groups_delete(conn: Connection, group: str) -> None:
    """Delete GROUP; its members lose the roles they held through it."""
    conn.client.delete_group(group)
    click.echo(f"Group {group} deleted.")


@groups.command("add")
@click.argument("group")
@click.argument("user")
@pass_connection
def groups_add(conn: Connection, group: str, user: str) -> None:
    """Add USER to GROUP."""
    conn.client.add_group_member(group, user)
    click.echo(f"{user} is in {group}.")


@groups.command("remove")
@click.argument("group")
@click.argument("user")
@pass_connection
def groups_remove(conn: Connection, group: str, user: str) -> None:
    """Take USER out of GROUP."""
    conn.client.remove_group_member(group, user)
    click.echo(f"{user} is no longer in {group}.")


@click.command()
@click.argument("model")
@click.argument("user")
@pass_connection
def transfer(conn: Connection, model: str, user: str) -> None:
    """Make USER the owner of MODEL (the previous owner stays on as editor)."""
    conn.client.transfer(model, user)
    click.echo(f"{model} now belongs to {user}.")


@click.command()
@click.argument("model", required=False)
@click.option("--actor", help="Only events by this user.")
@click.option("--action", help="Only this action, such as publish or token-create.")
@click.option(
    "--since",
    help="Only events from then on: a date or time (2026-11-23, 2026-11-23T12:00Z, UTC unless "
    "it says) or back from now (90m, 24h, 7d).",
)
@click.option("--format", "output", type=click.Choice(["table", "json", "csv"]), default="table")
@pass_connection
def audit(
    conn: Connection,
    model: str | None,
    actor: str | None,
    action: str | None,
    since: str | None,
    output: str,
) -> None:
    """Show the audit log of MODEL, or of the whole server (admins)."""
    if output == "csv":
        click.echo(
            conn.client.audit(model, actor=actor, action=action, since=since, format="csv"),
            nl=False,
        )
        return
    events = conn.client.audit(model, actor=actor, action=action, since=since)
    if output == "json":
        click.echo(json.dumps(events, indent=2, ensure_ascii=False))
        return
    table(
        [
            (
                e["time"],
                e["actor"],
                e["action"],
                e["model"] or "",
                e["version"] or "",
                e["outcome"],
                e["source_ip"] or "",
            )
            for e in events
        ],
        ["TIME", "ACTOR", "ACTION", "MODEL", "VERSION", "OUTCOME", "FROM"],
    )


COMMANDS = [login, users, keys, tokens, access, collaborators, groups, transfer, audit]
