"""Typed OpenAPI documents per model on a real server (issue 20, point 2): generated from the
function's signature and hints at the import check, valid OpenAPI, and good enough to build a
real call that openapi-core checks, request and response, against the document."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_spec_validator import validate

from modelhost import errors
from modelhost.client import Client
from tests.helpers import PROJECTS, Server

pytestmark = pytest.mark.integration

TYPED = PROJECTS / "typed"
#: model name -> (file, function) in tests/fixtures/projects/typed
FIXTURES = {
    "doc-hints": ("hints.py", "predict"),
    "doc-rows": ("rows.py", "predict"),
    "doc-points": ("points.py", "measure"),
    "doc-wines": ("wines.py", "predict"),
    "doc-untyped": ("loose.py", "untyped"),
    "doc-kwargs": ("loose.py", "anything"),
    "doc-formals": ("typed.R", "score"),
}
EXAMPLE = {"data": {"alcohol": 12.5, "counts": [1, 2]}}
#: the invocation errors docs/api.md lists: every status an invocation answers (never 403)
STATUSES = ["400", "401", "404", "405", "413", "415", "429", "500", "502", "503", "504"]


@pytest.fixture(scope="module", autouse=True)
def published(server: Server) -> None:
    """The fixture projects on the suite's shared server; doc-hints needs a token."""
    admin = server.client()
    for name in ("d-viewer", "d-stranger"):
        admin.add_user(name, f"{name}-password")
    for model, (file, function) in FIXTURES.items():
        example = EXAMPLE if model == "doc-hints" else None
        admin.publish(TYPED, name=model, file=file, function=function, example=example)
    admin.set_access("doc-hints", invocation="token")
    admin.set_collaborator("doc-hints", "d-viewer", "viewer")


def _document(server: Server, model: str, route: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    answer = httpx.get(f"{server.url}/models/{model}/{route}openapi.json", headers=headers)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    validate(document)  # raises with the reason when it is not valid OpenAPI
    return document


def _keywords(document: dict[str, Any]) -> dict[str, Any]:
    return document["components"]["schemas"]["invocation-data"]["properties"]["data"]


def _positional(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document["components"]["schemas"]
    return schemas["invocation-parameters"]["properties"]["parameters"]


def _result(document: dict[str, Any]) -> dict[str, Any]:
    result = dict(document["components"]["schemas"]["invocation-response"]["properties"]["result"])
    result.pop("description")
    return result


def test_plain_hints_type_each_argument_and_the_result(server: Server) -> None:
    document = _document(server, "doc-hints")
    data = _keywords(document)
    # def predict(alcohol: float, colour: str = "red", counts: list[int] | None = None)
    assert data["properties"] == {
        "alcohol": {"type": "number"},
        "colour": {"type": "string", "default": "red"},
        "counts": {
            "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}],
            "default": None,
        },
    }
    assert data["required"] == ["alcohol"]
    assert data["additionalProperties"] is False
    assert _positional(document)["minItems"] == 1
    assert _positional(document)["maxItems"] == 3
    assert _result(document) == {"type": "object", "additionalProperties": {"type": "number"}}


def test_a_token_model_documents_its_auth_schemes_example_and_every_error(server: Server) -> None:
    document = _document(server, "doc-hints")
    schemes = document["components"]["securitySchemes"]
    assert {s["scheme"] for s in schemes.values()} == {"basic", "bearer"}
    operation = document["paths"]["/models/doc-hints/latest/model"]["post"]
    assert operation["security"] == [{name: []} for name in schemes]
    assert sorted(s for s in operation["responses"] if s != "200") == STATUSES
    content = operation["requestBody"]["content"]["application/json"]
    assert content["examples"]["example"]["value"] == EXAMPLE
    public = _document(server, "doc-rows")["paths"]["/models/doc-rows/latest/model"]["post"]
    assert public["security"] == []


def test_dataclasses_become_named_object_schemas(server: Server) -> None:
    document = _document(server, "doc-rows")
    schemas = document["components"]["schemas"]
    assert _keywords(document)["properties"]["wine"] == {"$ref": "#/components/schemas/Wine"}
    assert schemas["Wine"]["properties"] == {
        "alcohol": {"type": "number"},
        "acidity": {"type": "number", "default": 3.0},
    }
    assert schemas["Wine"]["required"] == ["alcohol"]
    assert _result(document) == {"$ref": "#/components/schemas/Score"}
    assert schemas["Score"]["required"] == ["quality", "label"]


def test_typed_dicts_become_object_schemas(server: Server) -> None:
    document = _document(server, "doc-points")
    schemas = document["components"]["schemas"]
    assert schemas["Point"]["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer"}}
    assert schemas["Point"]["required"] == ["x", "y"]
    assert _result(document) == {"$ref": "#/components/schemas/Distance"}


def test_a_pydantic_model_brings_its_own_schema(server: Server) -> None:
    document = _document(server, "doc-wines")
    sample = document["components"]["schemas"]["Sample"]
    assert sample["properties"]["alcohol"]["type"] == "number"
    assert sample["required"] == ["alcohol"]
    assert _keywords(document)["properties"]["threshold"] == {"type": "number", "default": 0.5}
    assert _result(document) == {"type": "boolean"}


def test_no_hints_and_kwargs_are_any_json(server: Server) -> None:
    untyped = _keywords(_document(server, "doc-untyped"))
    assert untyped["properties"] == {"x": {}, "y": {"default": 2}}
    kwargs = _document(server, "doc-kwargs")
    assert _keywords(kwargs)["additionalProperties"] == {}  # **options: any other name
    positional = _positional(kwargs)
    assert positional["items"] == {}  # *rest: any number after first
    assert "maxItems" not in positional


def test_r_formals_are_typed_from_their_defaults(server: Server) -> None:
    document = _document(server, "doc-formals")
    data = _keywords(document)
    # score <- function(features, weight = 0.5, label = "wine", strict = TRUE, ...)
    assert data["properties"] == {
        "features": {},
        "weight": {"type": "number", "default": 0.5},
        "label": {"type": "string", "default": "wine"},
        "strict": {"type": "boolean", "default": True},
    }
    assert data["required"] == ["features"]
    assert data["additionalProperties"] == {}  # ...


def test_a_label_and_a_version_have_documents_of_their_own(server: Server) -> None:
    admin = server.client()
    admin.set_label("doc-rows", "prod", version=1)
    labelled = _document(server, "doc-rows", "labels/prod/")
    assert list(labelled["paths"]) == ["/models/doc-rows/labels/prod/model"]
    versioned = _document(server, "doc-rows", "versions/1/")
    assert list(versioned["paths"]) == ["/models/doc-rows/versions/1/model"]
    assert admin.openapi("doc-rows", label="prod") == labelled
    with pytest.raises(errors.VersionNotFound):
        admin.openapi("doc-rows", version=9)
    with pytest.raises(errors.RouteNotFound, match="no label 'beta'"):
        admin.openapi("doc-rows", label="beta")


def test_a_call_built_from_the_document_passes_openapi_core_both_ways(server: Server) -> None:
    token = server.client().create_token("doc-hints", "docs")["token"]
    document = _document(server, "doc-hints")
    spec = OpenAPI.from_dict(document)
    operation = document["paths"]["/models/doc-hints/latest/model"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["examples"]["example"]["value"]
    url = document["servers"][0]["url"] + "/models/doc-hints/latest/model"
    request = requests.Request("POST", url, json=body, auth=(token, token)).prepare()
    spec.validate_request(RequestsOpenAPIRequest(request))
    with requests.Session() as session:
        response = session.send(request, timeout=30)
    assert response.status_code == 200, response.text
    spec.validate_response(RequestsOpenAPIRequest(request), RequestsOpenAPIResponse(response))
    assert response.json()["result"] == {"score": 27.0, "red": 1.0}  # 12.5 * 2 + 2 counts
    wrong = requests.Request("POST", url, json={"data": {"colour": "red"}}, auth=(token, token))
    with requests.Session() as session:
        refused = session.send(wrong.prepare(), timeout=30)
    assert refused.status_code == 400  # alcohol is required, as the document says
    spec.validate_response(
        RequestsOpenAPIRequest(wrong.prepare()), RequestsOpenAPIResponse(refused)
    )


def test_who_may_read_a_document(server: Server) -> None:
    url = f"{server.url}/models/doc-hints/openapi.json"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401
    assert "access tokens" in anonymous.json()["error"]["message"]
    token = server.client().create_token("doc-hints", "reader")["token"]
    assert httpx.get(url, auth=(token, token)).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert httpx.get(url, auth=("mht_wrong", "mht_wrong")).status_code == 401
    with Client.login(server.url, "d-viewer", "d-viewer-password") as viewer:
        assert viewer.openapi("doc-hints")["info"]["version"] == "1"
    with (
        Client.login(server.url, "d-stranger", "d-stranger-password") as stranger,
        pytest.raises(errors.ModelNotFound),
    ):
        stranger.openapi("doc-hints")
    with Client.login(server.url, "d-stranger", "d-stranger-password") as stranger:
        # private, but anyone may call it, so anyone may read how
        assert stranger.openapi("doc-rows")["paths"]
    # a public model's document is public, as calling it is; a missing model is not revealed
    assert httpx.get(f"{server.url}/models/doc-rows/openapi.json").status_code == 200
    assert httpx.get(f"{server.url}/models/no-such-model/openapi.json").status_code == 401


def test_the_cli_prints_and_writes_the_document(server: Server, tmp_path: Any) -> None:
    printed = server.cli("openapi", "doc-points", check=True)
    assert json.loads(printed.stdout)["paths"] == _document(server, "doc-points")["paths"]
    target = tmp_path / "points.json"
    written = server.cli("openapi", "doc-points", "--version", "1", "-o", str(target), check=True)
    assert "Wrote the OpenAPI document of doc-points" in written.stdout
    validate(json.loads(target.read_text()))
    both = server.cli("openapi", "doc-points", "--version", "1", "--label", "prod")
    assert both.returncode == 2
    assert "not both" in both.stderr
