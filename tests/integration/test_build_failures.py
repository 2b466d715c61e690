"""A version is ready only once an instance imported the script and found the function."""

from __future__ import annotations

import httpx
import pytest

from modelhost import errors
from tests.helpers import PROJECTS, Server

pytestmark = pytest.mark.integration

# project, what the failure message says, what the build log must show of the user's code
CASES = [
    ("syntax_error", "has a syntax error on line 1", ["predict.py", "def predict(x)"]),
    (
        "import_error",
        "raised ZeroDivisionError: division by zero",
        ["helpers.py", "return 1 / 0", "predict.py", "MODEL = load_model()"],
    ),
    ("missing_function", "has no function named 'predict'. Callables defined there: forecast", []),
    ("not_callable", "'predict' in 'predict.py' is a int, not a function", []),
    ("module_exit", "raised SystemExit: 3", ["sys.exit(3)"]),
]


@pytest.mark.parametrize(("project", "reason", "traceback_lines"), CASES, ids=[c[0] for c in CASES])
def test_publish_fails_with_the_reason_and_the_users_traceback(
    server: Server, project: str, reason: str, traceback_lines: list[str]
) -> None:
    client = server.client()
    name = f"broken-{project.replace('_', '-')}"
    with pytest.raises(errors.BuildFailed) as failure:
        client.publish(PROJECTS / project, file="predict.py", function="predict", name=name)
    assert reason in failure.value.message
    log = failure.value.build_log
    for line in traceback_lines:
        assert line in log
    assert "_modelhost_protocol" not in log
    assert "runtime/worker.py" not in log
    version = client.version(name, 1)
    assert version["status"] == "failed"
    assert version["build_log"] == log
    assert version["failure"]["kind"] == "load"
    assert reason in version["failure"]["message"]
    assert "Traceback" not in version["failure"]["message"]
    for line in traceback_lines:  # the user's traceback, apart (a syntax error has none)
        assert line in version["failure"]["message"] + (version["failure"]["traceback"] or "")
    assert client.model(name)["status"] == "failed"
    response = server.invoke(name, {"parameters": [1]})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_ready_instance"


def test_a_good_project_becomes_running_with_its_signature_in_the_build_log(
    server: Server,
) -> None:
    version = server.client().publish(
        PROJECTS / "good", file="predict.py", function="predict", name="builds-fine"
    )
    assert version["status"] == "running"
    assert version["signature"] == "predict(x)"
    assert version["failure"] is None
    assert "Ready." in server.client().version("builds-fine", 1)["build_log"]


def test_a_missing_file_is_refused_before_upload_by_the_client(server: Server) -> None:
    with pytest.raises(errors.EntryPointNotFound, match=r"'nope\.py' is not in"):
        server.client().publish(
            PROJECTS / "good", file="nope.py", function="predict", name="no-file"
        )
    with pytest.raises(errors.ModelNotFound):
        server.client().model("no-file")


def test_a_missing_file_is_refused_by_the_api_without_creating_a_version(
    server: Server,
) -> None:
    import io
    import tarfile

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        data = b"def predict(x):\n    return x\n"
        info = tarfile.TarInfo("other.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    response = httpx.post(
        f"{server.url}/api/v1/models/api-no-file/versions",
        params={"file": "predict.py", "function": "predict"},
        content=archive.getvalue(),
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/gzip"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "entry_point_not_found"
    assert "other.py" in body["error"]["message"]
    with pytest.raises(errors.ModelNotFound):
        server.client().versions("api-no-file")
