"""R environments on a real server with real R (issue 20, point 6): a library of packages an
admin prepared, registered with ``envs create NAME --r-library DIR``; an R version published
with ``--environment NAME`` sees that library and base R only. CRAN is out of reach, so the
test builds its library itself with ``R CMD INSTALL -l`` of a tiny package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server

pytestmark = pytest.mark.integration

SCRIPTS = PROJECTS / "r_library"
TINYPKG = PROJECTS.parent / "r_packages" / "tinypkg"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh R library holding tinypkg only."""
    made = tmp_path_factory.mktemp("r-library") / "library"
    made.mkdir()
    installed = subprocess.run(
        ["R", "CMD", "INSTALL", "--no-docs", "--no-multiarch", "-l", str(made), str(TINYPKG)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return made


@pytest.fixture(scope="module")
def tiny_env(server: Server, library: Path) -> str:
    done = server.cli("envs", "create", "tiny-r", "--r-library", str(library), check=True)
    assert "tiny-r revision 1 (created): R library" in done.stdout
    assert "tinypkg 0.1.0" in done.stdout
    return "tiny-r"


def test_an_r_library_is_registered_listed_and_shown(
    server: Server, tiny_env: str, library: Path
) -> None:
    again = server.cli("envs", "create", tiny_env, "--r-library", str(library), check=True)
    assert "(unchanged)" in again.stdout
    listed = server.cli("envs", "list", check=True).stdout
    row = next(line for line in listed.splitlines() if line.startswith(tiny_env))
    assert row.split()[1] == "r"
    shown = server.cli("envs", "show", tiny_env, check=True).stdout
    assert f"library:      {library}" in shown
    assert "tinypkg 0.1.0" in shown
    env = server.client().environment(tiny_env)
    assert (env["kind"], env["r_library"], env["packages"]) == (
        "r",
        str(library),
        ["tinypkg 0.1.0"],
    )


def test_a_package_only_in_the_named_library_loads_and_the_site_library_is_not_seen(
    server: Server, tiny_env: str, library: Path
) -> None:
    version = server.client().publish(
        SCRIPTS, name="r-tiny", file="uses_tiny.R", function="double_it", environment=tiny_env
    )
    assert version["r_library"] == str(library)
    assert server.invoke("r-tiny", {"data": {"x": 4}}).json()["result"] == 8
    server.client().publish(
        SCRIPTS, name="r-paths", file="uses_tiny.R", function="paths", environment=tiny_env
    )
    paths = server.invoke("r-paths", {"data": {}}).json()["result"]
    base = subprocess.run(
        ["Rscript", "--vanilla", "-e", "cat(.Library)"], capture_output=True, text=True, check=True
    ).stdout
    assert paths == [str(library), base]  # the library, then base R: no site library


def test_a_package_only_in_the_site_library_fails_the_version_with_what_to_do(
    server: Server, tiny_env: str, library: Path
) -> None:
    site = subprocess.run(
        ["Rscript", "--vanilla", "-e", 'cat(find.package("randomForest", quiet = TRUE))'],
        capture_output=True,
        text=True,
    ).stdout
    assert "site-library" in site, "this test needs r-cran-randomforest in R's site library"
    with pytest.raises(errors.BuildFailed) as failed:
        server.client().publish(
            SCRIPTS, name="r-site", file="uses_site.R", function="grow", environment=tiny_env
        )
    message = failed.value.message
    assert "needs the R package 'randomForest'" in message
    assert f"not in this version's R library ({library})" in message
    assert f"R CMD INSTALL -l {library}" in message
    log = server.client().version("r-site", 1)["build_log"] or ""
    assert "there is no package called" in log


def test_bad_r_libraries_and_mismatched_environments_are_refused_with_what_to_do(
    server: Server, tiny_env: str, tmp_path: Path
) -> None:
    admin = server.client()
    with pytest.raises(errors.BadRequest, match="must be an absolute path"):
        admin.create_environment("bad-r", r_library="relative/library")
    with pytest.raises(errors.BadRequest, match="There is no directory"):
        admin.create_environment("bad-r", r_library=str(tmp_path / "missing"))
    with pytest.raises(errors.BadRequest, match="holds no R packages"):
        admin.create_environment("bad-r", r_library=str(tmp_path))
    with pytest.raises(errors.BadRequest, match="inside \\(or holds\\) the data directory"):
        admin.create_environment("bad-r", r_library=str(server.home / "bundles"))
    with pytest.raises(errors.BadRequest, match="is an R library; a Python script needs"):
        admin.publish(
            PROJECTS / "calc", name="py-in-r", file="calc.py", function="add", environment=tiny_env
        )
    with pytest.raises(errors.BadRequest, match="is for Python scripts"):
        admin.publish(
            SCRIPTS,
            name="r-in-server",
            file="uses_tiny.R",
            function="double_it",
            environment="server",
        )
    with pytest.raises(errors.Conflict, match="is an R environment"):
        admin.create_environment(tiny_env, "numpy\n")
    run = server.cli("run", str(SCRIPTS), "--environment", tiny_env, "--", "Rscript", "uses_tiny.R")
    assert run.returncode == 1
    assert "is an R library, which R versions use" in run.stderr
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy\n")
    usage = server.cli(
        "envs", "create", "both", "--requirements", str(requirements), "--r-library", "/srv"
    )
    assert usage.returncode == 2
    assert "--requirements FILE (Python) or --r-library DIR (R)" in usage.stderr
