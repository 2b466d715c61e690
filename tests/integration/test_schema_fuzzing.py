"""Schema-driven fuzzing of the management API with schemathesis: requests generated from the
published OpenAPI (valid and invalid ones, then sequences of calls that use what the previous
ones returned) against a real server, as an admin. None may be answered with a server error:
every mistake a client can make gets a 4xx in the error envelope. And every answer must conform
to the schema: a status the operation documents (its success, or one of the error statuses
every route documents with the error envelope), the documented content type, and a body that
validates against the schema for that status.

A bounded number of examples per operation and a fixed seed keep it repeatable and short in CI;
run `st run URL/api/v1/openapi.json -H 'Authorization: Bearer KEY'` for a longer search."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost import urls
from tests.helpers import PROJECTS, Server, running_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("fuzzing") / "home") as running:
        # Something to find: a model with a version, so the model routes get past 404.
        running.client().publish(PROJECTS / "calc", name="m", file="calc.py", function="add")
        yield running


#: no server error, and the answer conforms to the published schema
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)


def test_no_generated_management_request_gets_a_server_error_or_breaks_the_schema(
    fuzzed: Server,
) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: scripts/test installs it"
    result = subprocess.run(
        [
            st,
            "run",
            f"{fuzzed.url}{urls.OPENAPI}",
            "--header",
            f"Authorization: Bearer {fuzzed.api_key}",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            "10",
            "--seed",
            "20261206",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
    assert "Tested: " in result.stdout
