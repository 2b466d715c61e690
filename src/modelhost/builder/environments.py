"""Which runtime and environment a version needs, and which program runs it.

Python scripts run in the server's own interpreter (environment ``server``; the ``python``
setting overrides it), or in an environment of their own made by :mod:`.uvenv`: ``isolated``,
from the project's ``requirements.txt`` or ``pyproject.toml``, or a named environment. R
scripts run with ``Rscript`` from the PATH (the ``rscript`` setting overrides it).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path, PurePosixPath

from modelhost import errors
from modelhost.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SERVER = "server"
ISOLATED = "isolated"
R = "r"
#: Names a named environment cannot have, because they mean something else.
RESERVED = (SERVER, ISOLATED, R, "auto")
R_SUFFIXES = (".R", ".r")
PYTHON_SUFFIXES = (".py",)

R_MISSING = (
    "R is not installed on this server, so R models cannot run. Install R and jsonlite "
    "(Debian/Ubuntu: apt-get install r-base-core r-cran-jsonlite) or point the setting "
    "rscript (MODELHOST_RSCRIPT) at an Rscript program, then publish again."
)


def runtime_for(file: str) -> str:
    """``python`` or ``r``, from the script's name; anything else is refused."""
    suffix = PurePosixPath(file).suffix
    if suffix in PYTHON_SUFFIXES:
        return "python"
    if suffix in R_SUFFIXES:
        return "r"
    raise errors.BadRequest(
        f"The file '{file}' is not a Python (.py) or R (.R) script; name the script that "
        "defines the function."
    )


def interpreter(settings: Settings, runtime: str) -> str:
    """The program that runs instances of ``runtime``; a clear error when it is missing."""
    if runtime == "r":
        found = settings.rscript or shutil.which("Rscript")
        if not found or not shutil.which(found):
            raise errors.BadRequest(R_MISSING)
        return str(found)
    return str(settings.python or sys.executable)


def describe(settings: Settings, runtime: str) -> str:
    """One line for the build log."""
    program = interpreter(settings, runtime)
    if runtime == "r":
        return f"R ({program})"
    if settings.python:
        return f"server ({program})"
    return f"server (Python {sys.version.split()[0]} at {program})"


def requirements_of(tree: Path) -> tuple[str, str] | None:
    """``(file, requirements text)`` of a project: its ``requirements.txt``, else the
    ``[project] dependencies`` of its ``pyproject.toml``; None when it declares none."""
    requirements = tree / "requirements.txt"
    if requirements.is_file():
        return "requirements.txt", requirements.read_text(encoding="utf-8", errors="replace")
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise errors.BadRequest(
                f"The project's pyproject.toml is not valid TOML ({exc}); fix it, or publish "
                "with --environment server."
            ) from None
        dependencies = data.get("project", {}).get("dependencies") or []
        if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
            raise errors.BadRequest(
                "[project] dependencies in pyproject.toml must be a list of requirement strings."
            )
        if dependencies:
            return "pyproject.toml", "\n".join(dependencies) + "\n"
    return None


def choose(requested: str | None, runtime: str, declared: bool) -> str:
    """The environment kind a version gets: what was asked for, or by default ``isolated``
    when the project declares dependencies, else ``server``. R versions get ``r`` (the
    server's R and its packages) or a named R environment."""
    if runtime == R:
        if requested in (None, "", "auto", R):
            return R
        if requested in (SERVER, ISOLATED):
            raise errors.BadRequest(
                f"--environment {requested} is for Python scripts; publish an R script without "
                "--environment (the server's R and its packages), or with the name of an R "
                "environment from 'modelhost envs list'."
            )
        return requested
    if requested in (None, "", "auto"):
        return ISOLATED if declared else SERVER
    if requested == R:
        raise errors.BadRequest("--environment r is only for R scripts (.R).")
    if requested == ISOLATED and not declared:
        raise errors.BadRequest(
            "--environment isolated needs the project's dependencies: add a requirements.txt "
            "(or [project] dependencies in pyproject.toml), or publish with --environment server."
        )
    return requested


PYTHON_COMMANDS = ("python", "python3")
R_COMMANDS = ("Rscript",)


def run_command(
    settings: Settings, argv: list[str], python: str | None = None
) -> tuple[list[str], str | None]:
    """The program a run starts for ``argv``, and a directory to put first on its PATH.

    Runs use the environment versions use: ``python``/``python3`` become the interpreter that
    runs Python instances (whose directory also goes first on the PATH, so ``pip`` and other
    scripts of that environment are found), and ``Rscript`` becomes the R program. ``python``
    is the interpreter of the project's isolated environment when it has one.
    """
    program, rest = argv[0], argv[1:]
    python = python or interpreter(settings, "python")
    if program in PYTHON_COMMANDS:
        return [python, *rest], str(PurePosixPath(python).parent)
    if program in R_COMMANDS:
        return [interpreter(settings, "r"), *rest], None
    return list(argv), str(PurePosixPath(python).parent)
