"""The published OpenAPI (/api/v1/openapi.json) describes what the API answers: every operation
documents the error envelope for the statuses of the error tree, no 422 (a request that fails
validation is a 400), and JSON answers typed as JSON, not as strings. Schemathesis checks real
answers against it (tests/integration/test_schema_fuzzing.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from modelhost.app import create_app
from modelhost.settings import load_settings
from tests.fakes import FakeBackend

#: The statuses of the errors a server raises (the tree in docs/api.md's error tables and
#: errors.py), written out by hand; 422 build_failed is the client's alone.
ERROR_STATUSES = {"400", "401", "403", "404", "405", "409", "413", "415", "429", "431"}
ERROR_STATUSES |= {"500", "502", "503", "504"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("openapi") / "home"
    app = create_app(load_settings(environ={"MODELHOST_HOME": str(home)}), backend=FakeBackend())
    try:
        return app.api.openapi()
    finally:
        app.services.repo.engine.dispose()


def _operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_every_operation_documents_the_error_envelope_for_each_error_status(
    schema: dict[str, Any],
) -> None:
    envelope = schema["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error", "request_id"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"code", "message"}
    for name, operation in _operations(schema):
        responses = operation["responses"]
        assert set(responses) >= ERROR_STATUSES, name
        for status in ERROR_STATUSES:
            content = responses[status]["content"]["application/json"]["schema"]
            if (name, status) == ("GET /health", "503"):
                # a stopping server's health report, as docs/api.md says: not an error
                assert content["properties"]["ready"] == {"const": False}
                continue
            assert content == {"$ref": "#/components/schemas/ErrorEnvelope"}, (name, status)
        assert "code bad_request" in responses["400"]["description"]


def test_no_operation_documents_a_422_which_the_api_never_answers(schema: dict[str, Any]) -> None:
    assert [name for name, op in _operations(schema) if "422" in op["responses"]] == []
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_json_answers_are_typed_as_json_not_as_strings(schema: dict[str, Any]) -> None:
    for name, operation in _operations(schema):
        for status, response in operation["responses"].items():
            body = response.get("content", {}).get("application/json", {}).get("schema")
            assert body != {"type": "string"}, (name, status)


def test_the_audit_routes_document_their_csv_answer(schema: dict[str, Any]) -> None:
    for path in ("/api/v1/audit", "/api/v1/models/{model}/audit"):
        content = schema["paths"][path]["get"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/csv"}


def test_the_openapi_is_what_the_server_publishes(tmp_path: Path) -> None:
    app = create_app(
        load_settings(environ={"MODELHOST_HOME": str(tmp_path / "home")}), backend=FakeBackend()
    )

    async def fetch() -> dict[str, Any]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            answer = await http.get("/api/v1/openapi.json")
            assert answer.status_code == 200
            return answer.json()  # type: ignore[no-any-return]

    try:
        published = anyio.run(fetch)
    finally:
        app.services.repo.engine.dispose()
    assert "422" not in published["paths"]["/api/v1/models/{model}"]["patch"]["responses"]
    assert set(published["paths"]["/api/v1/models/{model}"]["patch"]["responses"]) >= ERROR_STATUSES


def test_the_publish_fork_parameter_says_every_instance_is_forked_the_first_too(
    schema: dict[str, Any],
) -> None:
    # docs/api.md and `modelhost publish --help`: every instance, the first one too, is forked
    # from the version's fork server; R instances always start fresh
    operation = schema["paths"]["/api/v1/models/{model}/versions"]["post"]
    [fork] = [p for p in operation["parameters"] if p["name"] == "fork"]
    description = fork["description"]
    assert "second and later" not in description
    assert "Fork every instance, the first one too" in description
    assert "fork server" in description
    assert "R instances always start fresh" in description
