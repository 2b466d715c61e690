"""A batching version's OpenAPI document (``/models/{model}/openapi.json``) describes one call:
its body is one input, a ``data`` object or a ``parameters`` array, which the function gets as
one element of its list of inputs, and its ``result`` is that call's own result (docs/api.md,
"Batching functions"). A plain version's document is what it always was. In process, with the
fixture projects ``batching`` (Python), ``r_batching`` (R) and ``calc``."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelhost.app import ModelhostApp, create_app
from modelhost.operations import model_docs
from modelhost.operations.credentials import bootstrap_admin
from modelhost.settings import load_settings
from tests.fakes import FakeBackend
from tests.helpers import PROJECTS, calc_archive

pytestmark = pytest.mark.anyio

RSCRIPT = "/usr/bin/Rscript"  # Debian's r-base-core, as the R integration tests use


def _archive(path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=path.name)
    return buffer.getvalue()


async def _publish(http: httpx.AsyncClient, name: str, archive: bytes, **params: Any) -> None:
    published = await http.post(
        f"/api/v1/models/{name}/versions",
        params=params,
        content=archive,
        headers={"Content-Type": "application/gzip"},
    )
    assert published.status_code == 201, published.text


@asynccontextmanager
async def batching_app(home: Path) -> AsyncIterator[ModelhostApp]:
    """The app in process, its admin's key in ``admin_key``, with ``batch`` (total, batches of
    8, no example), ``batch-example`` (total with an example), ``r-batch`` (the R total,
    batches of 4) and ``calc`` (add, not batching). The UI's tests use it too."""
    settings = load_settings(environ={"MODELHOST_HOME": str(home), "MODELHOST_RSCRIPT": RSCRIPT})
    application = create_app(settings, backend=FakeBackend())
    key = bootstrap_admin(application.services.repo, settings.home_path, settings.url) or ""
    application.admin_key = key  # type: ignore[attr-defined]
    batching = _archive(PROJECTS / "batching" / "batching.py")
    async with _http(application) as http:
        await _publish(
            http, "batch", batching, file="batching.py", function="total", batch_max_size=8
        )
        await _publish(
            http,
            "batch-example",
            batching,
            file="batching.py",
            function="total",
            batch_max_size=8,
            example=json.dumps({"parameters": [1, 2]}),
        )
        await _publish(
            http,
            "r-batch",
            _archive(PROJECTS / "r_batching" / "batching.R"),
            file="batching.R",
            function="total",
            batch_max_size=4,
        )
        await _publish(http, "calc", calc_archive(), file="calc.py", function="add")
    await application.services.reconciler.reconcile_once()
    await application.services.reconciler.reconcile_once()  # built, then started
    try:
        yield application
    finally:
        await application.services.reconciler.close()
        application.services.repo.engine.dispose()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[ModelhostApp]:
    async with batching_app(tmp_path / "home") as application:
        yield application


def _http(app: ModelhostApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {app.admin_key}"},  # type: ignore[attr-defined]
    )


async def _document(app: ModelhostApp, model: str) -> dict[str, Any]:
    async with _http(app) as http:
        answer = await http.get(f"/models/{model}/versions/1/openapi.json")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def _operation(document: dict[str, Any]) -> dict[str, Any]:
    [item] = document["paths"].values()
    return item["post"]  # type: ignore[no-any-return]


def _forms(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    schemas = document["components"]["schemas"]
    data = schemas[model_docs.REQUEST_DATA]["properties"]["data"]
    parameters = schemas[model_docs.REQUEST_PARAMETERS]["properties"]["parameters"]
    return data, parameters


async def test_a_batching_versions_request_forms_are_one_calls_input_of_the_functions_list(
    app: ModelhostApp,
) -> None:
    data, parameters = _forms(await _document(app, "batch"))
    assert "One call's input" in data["description"]
    assert "(a dict) as one element of its list of inputs" in data["description"]
    assert "keyword arguments" not in data["description"].lower()
    assert "One call's input" in parameters["description"]
    assert "(a list) as one element of its list of inputs" in parameters["description"]
    assert "positional arguments" not in parameters["description"].lower()
    assert "any number of" not in parameters["description"]
    # any object or array is one input: the function, not the signature, says what it holds
    assert data["type"] == "object"
    assert data.get("additionalProperties", {}) == {}
    assert "properties" not in data or data["properties"] == {}
    assert parameters["type"] == "array"
    assert "maxItems" not in parameters
    assert parameters.get("minItems", 0) == 0


async def test_a_batching_versions_operation_says_each_call_sends_one_input_and_gets_its_own_result(
    app: ModelhostApp,
) -> None:
    document = await _document(app, "batch")
    operation = _operation(document)
    assert "Send keyword arguments" not in operation["description"]
    assert "`total` is a batching function: each call sends one input" in operation["description"]
    assert "this call's own result" in operation["description"]
    assert operation["x-modelhost-batch"] == {"max_size": 8, "max_wait_ms": 5.0}
    result = document["components"]["schemas"][model_docs.RESPONSE]["properties"]["result"]
    assert result["description"].startswith("This call's own result")
    assert "bind to the function" not in operation["responses"]["400"]["description"]


async def test_a_batching_versions_example_is_shown_as_one_calls_input(app: ModelhostApp) -> None:
    content = _operation(await _document(app, "batch-example"))["requestBody"]["content"]
    example = content["application/json"]["examples"]["example"]
    assert example["value"] == {"parameters": [1, 2]}
    assert example["summary"].startswith("One call's input")


async def test_an_r_batching_versions_document_says_its_inputs_are_r_lists(
    app: ModelhostApp,
) -> None:
    document = await _document(app, "r-batch")
    data, parameters = _forms(document)
    assert "(an R named list) as one element of its list of inputs" in data["description"]
    assert "(an R list) as one element of its list of inputs" in parameters["description"]
    assert _operation(document)["x-modelhost-batch"]["max_size"] == 4


async def test_the_document_follows_a_change_of_the_batching_limits(app: ModelhostApp) -> None:
    async with _http(app) as http:
        changed = await http.patch("/api/v1/models/batch/versions/1", json={"batch_max_size": 32})
        assert changed.status_code == 200, changed.text
    operation = _operation(await _document(app, "batch"))
    assert operation["x-modelhost-batch"]["max_size"] == 32
    assert "at most 32 a batch" in operation["description"]


async def test_a_plain_versions_document_is_the_one_built_from_its_signature(
    app: ModelhostApp,
) -> None:
    served = await _document(app, "calc")
    services = app.services
    model = services.repo.find_model("calc")
    assert model is not None
    version = model_docs.resolve(services, model, "versions/1")
    assert served == model_docs.document(services, model, version, "versions/1")
    assert "x-modelhost-batch" not in _operation(served)
    assert "Send keyword arguments" in _operation(served)["description"]
