"""The code that runs is the code that was published (issue 15: an edited working copy was
served): an instance start finds the edit and extracts the copy again, with a log line."""

from __future__ import annotations

import pytest

from tests.helpers import PROJECTS, Server, wait_until

pytestmark = pytest.mark.integration


def test_an_edited_working_copy_is_extracted_again_before_an_instance_starts(
    server: Server,
) -> None:
    client = server.client()
    version = client.publish(PROJECTS / "calc", name="edited", file="calc.py", function="add")
    copy = server.home / "work" / version["id"]
    assert (copy / "calc.py").is_file()

    (copy / "calc.py").write_text("def add(x, y):\n    return 42\n")  # edited behind its back
    first = client.instances("edited")[0]["id"]
    client.restart("edited")
    wait_until(
        lambda: [
            i for i in client.instances("edited") if i["id"] != first and i["state"] == "ready"
        ],
        timeout=60,
    )

    answer = server.invoke("edited", {"data": {"x": 1, "y": 2}})
    assert answer.json()["result"] == 3
    assert "return x + y" in (copy / "calc.py").read_text()
    log = server.log.read_text()
    assert "The working copy of edited version 1 differs from its bundle (changed calc.py)" in log
