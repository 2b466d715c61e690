"""Which runtime a version needs and which program runs it.

Python scripts run in the server's own interpreter (the ``python`` setting overrides it); R
scripts run with ``Rscript`` from the PATH (the ``rscript`` setting overrides it).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import PurePosixPath

from modelhost import errors
from modelhost.settings import Settings

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


PYTHON_COMMANDS = ("python", "python3")
R_COMMANDS = ("Rscript",)


def run_command(settings: Settings, argv: list[str]) -> tuple[list[str], str | None]:
    """The program a run starts for ``argv``, and a directory to put first on its PATH.

    Runs use the environment versions use: ``python``/``python3`` become the interpreter that
    runs Python instances (whose directory also goes first on the PATH, so ``pip`` and other
    scripts of that environment are found), and ``Rscript`` becomes the R program. This is the
    seam where a run will later use the project's own isolated environment.
    """
    program, rest = argv[0], argv[1:]
    if program in PYTHON_COMMANDS:
        python = interpreter(settings, "python")
        return [python, *rest], str(PurePosixPath(python).parent)
    if program in R_COMMANDS:
        return [interpreter(settings, "r"), *rest], None
    return list(argv), str(PurePosixPath(interpreter(settings, "python")).parent)
