"""The action table: each action once, each with a permission the permission table knows; and
the layers above the operations neither import each other nor write an action's name."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelhost
from modelhost import events
from modelhost.events import ACTIONS, Action
from modelhost.permissions import PERMISSIONS

PACKAGE = Path(modelhost.__file__).parent


def _modules(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((PACKAGE / folder).rglob("*.py"))


def test_every_action_is_in_the_table_once_under_its_own_name() -> None:
    defined = [value for value in vars(events).values() if isinstance(value, Action)]
    assert len({a.name for a in defined}) == len(defined)
    assert sorted(ACTIONS) == sorted(a.name for a in defined)
    assert all(ACTIONS[a.name] is a for a in defined)


def test_every_action_on_a_model_needs_a_permission_of_the_permission_table() -> None:
    needed = {a.permission for a in ACTIONS.values() if a.permission is not None}
    assert needed <= set(PERMISSIONS)


def test_the_ui_imports_nothing_from_the_api() -> None:
    found = []
    for path in _modules("ui"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "modelhost.api" or n.startswith("modelhost.api.") for n in names):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


#: strings that spell an action's name but are not one: (module, text) -> why
NOT_ACTIONS = {
    ("api/access.py", "login"): "the name of the API key that signing in creates",
    ("api/system.py", "invoke"): "a link in the server's index",
}


@pytest.mark.parametrize("folder", ["api", "ui"])
def test_no_action_name_is_written_out_in_the_api_or_the_ui(folder: str) -> None:
    """They name actions by the table's constants (mypy checks that the audit takes them)."""
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}"
        for path in _modules(folder)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in ACTIONS
        and (str(path.relative_to(PACKAGE)), node.value) not in NOT_ACTIONS
    ]
    assert found == []
