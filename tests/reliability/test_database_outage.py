"""The database goes away under a running server (issue 15): management calls answer 503 with
Retry-After instead of 500, calls to loaded models keep working, and everything is back once
the database returns, with no restart."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import PROJECTS, Server, running_server, wait_until
from tests.reliability.cuttable import Cuttable

pytestmark = pytest.mark.integration


@pytest.fixture
def outage(
    tmp_path: pytest.TempPathFactory, postgres_url: str
) -> Iterator[tuple[Server, Cuttable]]:
    proxy = Cuttable(("127.0.0.1", 5432))
    proxy.restore()
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    with running_server(tmp_path / "home", {"MODELHOST_DATABASE_URL": url}) as server:  # type: ignore[operator]
        yield server, proxy
    proxy.cut()


def _models(server: Server) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.get(f"{server.url}/api/v1/models", headers=headers, timeout=30)


def test_a_database_outage_is_a_503_with_retry_after_calls_go_on_and_it_heals(
    outage: tuple[Server, Cuttable],
) -> None:
    server, proxy = outage
    server.client().publish(PROJECTS / "calc", name="calc", file="calc.py", function="add")
    assert _models(server).status_code == 200

    proxy.cut()
    refused = _models(server)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0
    error = refused.json()["error"]
    assert error["code"] == "unavailable"
    assert "database" in error["message"]
    for _ in range(20):  # the call path needs no database
        answer = server.invoke("calc", {"data": {"x": 1, "y": 2}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == 3

    proxy.restore()
    wait_until(lambda: _models(server).status_code == 200, timeout=10)
    assert [m["name"] for m in _models(server).json()["models"]] == ["calc"]
    answer = server.invoke("calc", {"data": {"x": 2, "y": 2}})
    assert answer.json()["result"] == 4
