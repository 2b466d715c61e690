"""A version object's ``fork`` is whether its instances are forked from a process that imported
the script once (docs/api.md, "Versions"): ``true`` by default for Python, ``false`` for a
version published with ``fork=false``, and ``false`` for an R version, whose instances always
start fresh, whatever the publish said. In process, with the fixture projects ``calc`` (Python)
and ``r_kitchen`` (R)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost.app import create_app
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS, calc_archive

pytestmark = pytest.mark.anyio

RSCRIPT = "/usr/bin/Rscript"  # Debian's r-base-core, as the R integration tests use


def _r_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "r_kitchen" / "kitchen.R", arcname="kitchen.R")
    return buffer.getvalue()


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        environ={"MODELHOST_HOME": str(tmp_path / "home"), "MODELHOST_RSCRIPT": RSCRIPT}
    )
    app = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(app.services.repo, settings.home_path, settings.url) or ""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client
    await app.services.reconciler.close()
    app.services.repo.engine.dispose()


async def _publish(
    http: httpx.AsyncClient, model: str, archive: bytes, **params: Any
) -> dict[str, Any]:
    answer = await http.post(
        f"/api/v1/models/{model}/versions",
        params=params,
        content=archive,
        headers={"Content-Type": "application/gzip"},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["version"]  # type: ignore[no-any-return]


async def _fork_everywhere(http: httpx.AsyncClient, model: str) -> list[bool]:
    """``fork`` of version 1 as the single-version view and the list of versions give it."""
    one = await http.get(f"/api/v1/models/{model}/versions/1")
    assert one.status_code == 200, one.text
    listed = await http.get(f"/api/v1/models/{model}/versions")
    assert listed.status_code == 200, listed.text
    [version] = listed.json()["versions"]
    return [one.json()["fork"], version["fork"]]


async def test_a_python_version_reports_fork_true_by_default(http: httpx.AsyncClient) -> None:
    published = await _publish(http, "calc", calc_archive(), file="calc.py", function="add")
    assert published["fork"] is True
    assert await _fork_everywhere(http, "calc") == [True, True]


async def test_a_python_version_published_with_fork_false_reports_false(
    http: httpx.AsyncClient,
) -> None:
    published = await _publish(
        http, "calc", calc_archive(), file="calc.py", function="add", fork="false"
    )
    assert published["fork"] is False
    assert await _fork_everywhere(http, "calc") == [False, False]


@pytest.mark.parametrize("params", [{}, {"fork": "true"}], ids=["default", "fork-true"])
async def test_an_r_version_reports_fork_false_because_r_instances_always_start_fresh(
    http: httpx.AsyncClient, params: dict[str, str]
) -> None:
    published = await _publish(
        http, "kitchen", _r_archive(), file="kitchen.R", function="add", **params
    )
    assert published["fork"] is False
    assert await _fork_everywhere(http, "kitchen") == [False, False]
