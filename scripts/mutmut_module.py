"""Runs one mutmut command on one module, against only that module's tests.

mutmut reads one configuration (``[tool.mutmut]`` in pyproject.toml) for every module; this
keeps that configuration and narrows it to the module given and the tests listed for it under
``[tool.modelhost.mutation]``, so a run mutates one module and collects coverage from its own
tests only (fewer tests, less CPU on a shared machine)::

    .venv/bin/python scripts/mutmut_module.py src/modelhost/planning.py run --max-children 2
    .venv/bin/python scripts/mutmut_module.py src/modelhost/planning.py results --all true
    .venv/bin/python scripts/mutmut_module.py --list       # the modules
    git diff --name-only main | .venv/bin/python scripts/mutmut_module.py --touched
"""

from __future__ import annotations

import sys
from pathlib import Path

import mutmut.configuration
from mutmut.__main__ import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def modules() -> dict[str, list[str]]:
    """Each mutated module and the test files that judge its mutants."""
    data = tomllib.loads(Path("pyproject.toml").read_text("utf-8"))
    table: dict[str, list[str]] = data["tool"]["modelhost"]["mutation"]
    return table


def main(argv: list[str]) -> None:
    if argv[:1] == ["--list"]:
        print("\n".join(modules()))
        return
    if argv[:1] == ["--touched"]:  # changed paths on stdin -> the modules they concern
        changed = {line.strip() for line in sys.stdin if line.strip()}
        for module, tests in modules().items():
            if module in changed or any(
                p == t or p.startswith(t + "/") for t in tests for p in changed
            ):
                print(module)
        return
    if not argv or argv[0] not in modules():
        known = ", ".join(modules())
        sys.exit(f"Error: give one of the modules under [tool.modelhost.mutation]: {known}.")
    module, rest = argv[0], argv[1:]
    config = mutmut.configuration.config()
    config.only_mutate = [module]
    config.pytest_add_cli_args_test_selection = modules()[module]
    cli(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
