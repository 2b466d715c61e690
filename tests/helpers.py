"""Running a real ``modelhost serve`` for tests, on a free port, with its own data directory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import sqlalchemy as sa

from modelhost import Client, Instance

ROOT = Path(__file__).resolve().parent.parent
PROJECTS = Path(__file__).resolve().parent / "fixtures" / "projects"
EXAMPLE = ROOT / "examples" / "wine_quality"
WINE_ROW = [5.6, 0.615, 0, 1.6, 0.089, 16, 59, 0.9943, 3.58, 0.52, 9.9]
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{database}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """A real server process; ``client`` talks to it over HTTP with the admin key."""

    def __init__(self, home: Path, env: Mapping[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MODELHOST_HOME": str(home),
            "MODELHOST_PORT": str(self.port),
            "MODELHOST_RECONCILE_INTERVAL_SECONDS": "0.2",
            "MODELHOST_SWITCH_HOLD_SECONDS": "3",
            # Most tests call models without tokens; tests of tokens switch it back per model.
            "MODELHOST_DEFAULT_INVOCATION_MODE": "public",
            # The suite runs sandboxed, as production should: no bwrap is a failure, not a skip.
            "MODELHOST_ISOLATION": "sandbox",
            **(env or {}),
        }
        self.env.pop("MODELHOST_URL", None)
        self.env.pop("MODELHOST_API_KEY", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = home.parent / f"{home.name}-server.log"
        self._client: Client | None = None

    def start(self, timeout: float = 60) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modelhost", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def on_ray(self) -> bool:
        """Whether its instances run on a Ray cluster (setting ``backend = ray``, which
        ``scripts/test`` sets for its Ray pass) rather than as its own processes."""
        return self.env.get("MODELHOST_BACKEND", "local") == "ray"

    @property
    def serving_pid(self) -> int:
        """The serving process (the arbiter, ``process``, starts it and starts it again)."""
        return int((self.home / "serving.pid").read_text())

    @property
    def api_key(self) -> str:
        return str(json.loads((self.home / "credentials").read_text())["api_key"])

    def client(self) -> Client:
        """The admin's client, shared by the tests and closed when the server stops."""
        if self._client is None:
            self._client = Client(self.url, self.api_key)
        return self._client

    def cli(
        self, *args: str, check: bool = False, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the modelhost CLI as a user on this machine would (credentials file only);
        ``input`` is its stdin (a pipe that then ends), else the test's own."""
        env = {k: v for k, v in self.env.items() if k != "MODELHOST_PORT"}
        result = subprocess.run(
            [sys.executable, "-m", "modelhost", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            input=input,
        )
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def invoke(self, model: str, body: object, route: str = "latest") -> httpx.Response:
        return httpx.post(f"{self.url}/models/{model}/{route}/model", json=body, timeout=60)


@contextlib.contextmanager
def running_server(home: Path, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    server = Server(home, env).start()
    try:
        yield server
    finally:
        server.stop()


#: where a Ray node keeps its bundles, working copies and instance logs (docs/scaling.md:
#: ``/tmp/modelhost-ray-UID`` in the temporary directory of the node's processes). The nodes of
#: the test clusters run on this machine, with the tests' environment.
RAY_NODE_HOME = Path(tempfile.gettempdir()) / f"modelhost-ray-{os.geteuid()}"


def worker_pid(server: Server, instance: Instance) -> int:
    """The process id, on this machine, of the worker that runs ``instance``, whatever the
    server's backend. Locally that is the instance's ``pid``. On Ray ``pid`` is null (the
    worker runs on a node), and the test cluster's nodes run on this machine: the worker is the
    one process whose environment names the instance (``MODELHOST_INSTANCE_ID``) and that is
    not bubblewrap (the sandbox's bwrap processes have the same environment)."""
    if not server.on_ray:
        assert instance.pid is not None, instance
        return instance.pid
    assert instance.pid is None, instance
    wanted = f"MODELHOST_INSTANCE_ID={instance.id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            program = os.readlink(entry / "exe")
        except OSError:  # gone meanwhile, or not ours
            continue
        if wanted in environ and not program.endswith("/bwrap"):
            found.append(int(entry.name))
    assert len(found) == 1, f"processes of instance {instance.id}: {found}"
    return found[0]


def trained_example(destination: Path) -> Path:
    """A copy of the wine example with its model trained, as a user would have it."""
    project = destination / "wine_quality"
    if not (project / "results" / "classifier.pkl").exists():
        shutil.copytree(
            EXAMPLE, project, ignore=shutil.ignore_patterns("results"), dirs_exist_ok=True
        )
        subprocess.run(
            [sys.executable, "train.py"], cwd=project, check=True, capture_output=True, timeout=300
        )
    return project


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def database_dump(server: Server) -> str:
    """Every row of every table of the server's database, as text (SQLite or PostgreSQL)."""
    url = server.env.get("MODELHOST_DATABASE_URL") or f"sqlite:///{server.home / 'modelhost.db'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            lines = []
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    lines.append(f"{table}: {tuple(row)!r}")
            return "\n".join(lines)
    finally:
        engine.dispose()


def calc_archive() -> bytes:
    """The calc fixture project (calc.py) as the gzipped tar a publish uploads."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(PROJECTS / "calc" / "calc.py", arcname="calc.py")
    return buffer.getvalue()


def loopback_ports(pids: set[int]) -> set[int]:
    """The loopback TCP ports these processes listen on (from /proc/net/tcp and their fds)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and local.startswith("0100007F:") and inode in inodes:
            ports.add(int(local.split(":")[1], 16))
    return ports
