"""Nothing a model starts outlives its instance (issue 15: a process a model started with
``setsid`` survived it): the sandbox's PID namespace ends with the instance, and the kernel
ends every process in it, in whatever session or process group."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.helpers import Server, wait_until

pytestmark = pytest.mark.integration


def _processes_with(text: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if text.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                continue
    return found


def test_a_process_a_model_started_in_a_new_session_ends_with_its_instance(
    server: Server, tmp_path: Path
) -> None:
    tag = f"2000.{secrets.randbelow(10**9):09d}"  # sleep reads it as seconds
    project = tmp_path / "leaver"
    project.mkdir()
    (project / "leaver.py").write_text(
        "import subprocess\n"
        f"subprocess.Popen(['setsid', 'sleep', '{tag}'], start_new_session=True)\n"
        "def predict(x):\n    return x\n"
    )
    client = server.client()
    client.publish(project, name="leaver", file="leaver.py", function="predict")
    first = wait_until(lambda: _processes_with(tag))

    client.restart("leaver")  # a new instance starts another; the old one's must go
    wait_until(lambda: not set(first) & set(_processes_with(tag)), timeout=60)
    wait_until(lambda: _processes_with(tag))

    client.stop("leaver")
    wait_until(lambda: not _processes_with(tag), timeout=60)
