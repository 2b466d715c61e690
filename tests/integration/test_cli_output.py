"""The CLI's show and list commands speak one style (issue 20, point 5): text for people by
default, ``--format json`` for programs; and tokens are named by their name as well as id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cli-output") / "home") as running:
        running.client().publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
        yield running


@pytest.fixture(scope="module")
def schedule_id(server: Server) -> str:
    created = server.cli(
        "schedules", "create", str(PROJECTS / "calc"), "--every", "1h", "--", "true", check=True
    )
    return created.stdout.split()[1].rstrip(":")


SHOW_AND_LIST = [
    ("models", "list"),
    ("models", "show", "calc"),
    ("versions", "calc"),
    ("versions", "calc", "--number", "1"),
    ("runs", "list"),
    ("schedules", "list"),
    ("schedules", "show", "{schedule}"),
    ("envs", "list"),
    ("users", "list"),
    ("keys", "list"),
    ("tokens", "list", "calc"),
    ("collaborators", "list", "calc"),
    ("groups", "list"),
    ("env", "list", "calc"),
    ("metrics", "calc"),
]


@pytest.mark.parametrize("command", SHOW_AND_LIST, ids=[" ".join(c) for c in SHOW_AND_LIST])
def test_each_show_and_list_command_prints_text_or_with_format_json_json(
    server: Server, schedule_id: str, command: tuple[str, ...]
) -> None:
    args = [part.replace("{schedule}", schedule_id) for part in command]
    text = server.cli(*args, check=True).stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # people get text, not JSON
    as_json = server.cli(*args, "--format", "json", check=True).stdout
    short = server.cli(*args, "--json", check=True).stdout  # the short form
    assert _without_clock(json.loads(short)) == _without_clock(json.loads(as_json))


def _without_clock(found: Any) -> Any:
    """``found`` without the times that move between two commands (a metrics window starts at
    the current minute); everything else must be the same."""
    if isinstance(found, dict):
        return {k: _without_clock(v) for k, v in found.items() if not _is_time(v)}
    if isinstance(found, list):
        return [_without_clock(v) for v in found]
    return found


def _is_time(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 20 and value[4] == "-" and value[-1] == "Z"


def test_schedules_show_prints_text_like_runs_show(server: Server, schedule_id: str) -> None:
    lines = server.cli("schedules", "show", schedule_id, check=True).stdout.splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    assert fields["id"].strip() == schedule_id
    assert fields["when"].strip() == "every 1h"
    assert fields["command"].strip() == "true"


def test_a_format_that_does_not_exist_is_a_usage_error(server: Server) -> None:
    done = server.cli("models", "list", "--format", "yaml")
    assert done.returncode == 2
    assert "'yaml' is not one of 'text', 'json'" in done.stderr


def test_tokens_are_revoked_and_regenerated_by_name_when_unique(server: Server) -> None:
    client = server.client()
    first = server.cli("tokens", "create", "calc", "--name", "billing", check=True).stdout.strip()
    regenerated = server.cli("tokens", "regenerate", "calc", "billing", check=True).stdout.strip()
    assert regenerated.startswith("mht_")
    assert regenerated != first
    revoked = server.cli("tokens", "revoke", "calc", "billing", check=True)
    assert revoked.returncode == 0
    assert [t["revoked"] for t in client.tokens("calc") if t["name"] == "billing"] == [True]
    events = client.audit("calc", action="token-revoke")
    assert events[0]["detail"]["name"] == "billing"
    assert events[0]["detail"]["token"] == client.tokens("calc")[0]["id"]


def test_a_name_two_tokens_share_asks_for_the_id(server: Server) -> None:
    client = server.client()
    ids = [client.create_token("calc", "twin")["id"] for _ in range(2)]
    done = server.cli("tokens", "revoke", "calc", "twin")
    assert done.returncode == 1
    assert "has 2 active tokens named 'twin'; give the id of one" in done.stderr
    assert all(i in done.stderr for i in ids)
    server.cli("tokens", "revoke", "calc", ids[0], check=True)  # by id, always
    server.cli("tokens", "revoke", "calc", "twin", check=True)  # now unique among active ones
    wait_until(lambda: all(t["revoked"] for t in client.tokens("calc") if t["name"] == "twin"))


def test_a_token_name_that_matches_nothing_says_so(server: Server) -> None:
    done = server.cli("tokens", "revoke", "calc", "nobody's token")
    assert done.returncode == 1
    assert "has no active token with the id or name 'nobody's token'" in done.stderr
