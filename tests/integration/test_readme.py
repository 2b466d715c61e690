"""The README's Python client example runs as written against a real server (issue 20: it
used a `row` it never defined), in the state the README's tour leaves: two versions published."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, Server

pytestmark = pytest.mark.integration


def _python_example() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"### From Python\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert found, "the README has no 'From Python' example"
    return found.group(1)


def test_the_readmes_python_example_runs_as_written(
    server: Server, wine_project: Path, tmp_path: Path
) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    shutil.copytree(wine_project, examples / "wine_quality")  # trained once per session
    client = server.client()
    for _ in range(2):  # the tour published twice before this example
        client.publish(
            examples / "wine_quality", name="wine-quality", file="predict.py", function="predict"
        )

    env = {**server.env, "MODELHOST_URL": server.url, "MODELHOST_API_KEY": server.api_key}
    env.pop("MODELHOST_PORT")
    ran = subprocess.run(
        [sys.executable, "-c", _python_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert ran.returncode == 0, ran.stderr
    assert client.labels("wine-quality")[0]["name"] == "prod"
    assert [e["action"] for e in client.audit("wine-quality", action="env-set")] == ["env-set"]
