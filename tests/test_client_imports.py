"""The client is an SDK of its own: importing it loads no server module."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_PACKAGES = ("modelhost.runtime", "modelhost.gateway", "modelhost.db")
SERVER_DEPENDENCIES = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "jinja2")


def _modules_loaded_by(statement: str) -> list[str]:
    script = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return list(json.loads(out))


def test_importing_the_client_loads_no_server_module_or_server_dependency() -> None:
    loaded = _modules_loaded_by("from modelhost import Client")
    server = [
        name
        for name in loaded
        if name.startswith(SERVER_PACKAGES) or name.split(".")[0] in SERVER_DEPENDENCIES
    ]
    assert server == []
    assert "modelhost.client" in loaded


def test_importing_the_client_registers_no_private_worker_module() -> None:
    loaded = _modules_loaded_by("import modelhost")
    assert [name for name in loaded if name.startswith("_modelhost")] == []
