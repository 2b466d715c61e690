"""What runs on a Ray node for one instance (``backend = ray``): the actor's code.

The gateway (``backends/ray.py``) creates one :class:`NodeInstance` actor per instance; Ray
places it. On its node the actor:

1. checks the version's bundle, which came through Ray's object store, against its sha256 and
   extracts it to a node-local working copy (shared by the version's instances on that node);
2. opens a TCP port on the node's address, and accepts a connection only if it starts with
   a secret token that went through Ray: the one the starting server passed to
   :meth:`NodeInstance.start`, or one :meth:`NodeInstance.admit` gave another server of the
   installation (each token is good once; anything else is dropped);
3. starts modelhost's own worker (``runtime/worker.py``, or ``worker.R``) in the same sandbox the
   local backend uses, handing it the first connection (Python) and every later one over a
   Unix socket (``--more-fd``), or relaying them all to the R worker's one loopback
   connection (R cannot take an inherited socket; :class:`~modelhost.backends.ray_mux.FrameMux`);
4. supervises it: :meth:`NodeInstance.wait` returns its exit code, and the worker's log is read
   back by each server with :meth:`NodeInstance.read_log`.

The worker then speaks the framed protocol straight to each server, so a call costs no Ray
hop. The actor also holds what the servers share about the instance: what it runs
(:meth:`NodeInstance.describe`, for a server that finds it by name), whether the leader is
stopping it (:meth:`NodeInstance.retire`) and whether a server asked the leader to replace it
(:meth:`NodeInstance.ask_replacement`). The module imports nothing of Ray: the actor class is
wrapped by ``backends/ray.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from modelhost import errors, json_conversions
from modelhost.backends.base import server_line
from modelhost.backends.ray_mux import FrameMux
from modelhost.builder import uvenv
from modelhost.builder.bundles import BundleStore
from modelhost.runtime import protocol
from modelhost.sandbox import RUNTIME_DIR, Confinement, Sandbox, innermost_pid, open_sandbox
from modelhost.settings import load_settings

#: the settings a node takes from the gateway's (its sandbox's); everything else is its own
NODE_SETTINGS = (
    "isolation",
    "environment_build_timeout_seconds",
    "sandbox_first_uid",
    "sandbox_max_processes",
    "sandbox_max_open_files",
)
#: length of the token the gateway writes first on the connection, in bytes (hex)
TOKEN_LENGTH = 32
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MAX_LOG_READ = 256 * 1024
_WORKER = RUNTIME_DIR / "worker.py"
_JSON_CONVERSIONS = Path(json_conversions.__file__)
#: the most a connection to an R worker's port may send before its first frame is whole
_FIRST_FRAME_BYTES = 1 << 20
#: how long a connection that is not the first may take to send its token
_TOKEN_SECONDS = 5.0


def node_home() -> Path:
    """The node-local data directory: bundles, working copies and instance logs."""
    return Path(tempfile.gettempdir()) / f"modelhost-ray-{os.geteuid()}"


class NodeInstance:
    """One instance's worker on this node (a Ray actor; see the module docstring)."""

    def __init__(self, settings: dict[str, Any], about: dict[str, Any] | None = None) -> None:
        #: what the instance runs, for the servers that find it by name
        self._about = dict(about or {})
        home = node_home()
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._settings = load_settings(overrides={**settings, "home": str(home)}, environ={})
        self._sandbox: Sandbox = open_sandbox(self._settings)
        self._home = home
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._done = threading.Event()
        self._exit_code: int | None = None
        self._why: str = ""
        self._killed = False
        self._lock = threading.Lock()
        #: tokens that may connect, each once
        self._tokens: set[bytes] = set()
        #: where servers connect, once started (host, port, node id, the R worker's nonce)
        self._where: dict[str, Any] | None = None
        self._started = threading.Event()
        #: how a proven connection reaches the worker (its --more-fd socket, or the R relay)
        self._hand_over: socket.socket | FrameMux | None = None
        self._retiring = False
        self._replacement: dict[str, str] | None = None

    # ------------------------------------------------------------------ starting

    def placed(self) -> str:
        """The id of the node Ray placed this actor on: answers once it is placed (the gateway
        shows the instance as pending until then)."""
        import ray  # only ever imported on a Ray node, inside the actor

        return str(ray.get_runtime_context().get_node_id())

    def start(
        self, spec: dict[str, Any], bundle: bytes, token: str, load_timeout: float
    ) -> dict[str, Any]:
        """Set the instance up and open its port; returns where to connect and which node
        this is. The worker starts once the gateway has connected with ``token``."""
        import ray  # only ever imported on a Ray node, inside the actor

        sha256 = spec["bundle_sha256"]
        if hashlib.sha256(bundle).hexdigest() != sha256:
            raise errors.InvalidBundle(
                f"Bundle {sha256[:12]} reached node {ray.get_runtime_context().get_node_id()} "
                "damaged (its sha256 does not match)."
            )
        workdir = self._working_copy(sha256, spec["version_id"], bundle)
        env = dict(spec["env"])
        if spec["environment"]:
            interpreter = self._environment(spec["environment"], env)
        else:
            interpreter = sys.executable if spec["own_python"] else spec["interpreter"]
        if not Path(interpreter).exists():
            raise errors.InternalError(
                f"This node has no {interpreter}: the version's environment exists only where "
                "it was built. Install it at the same path on every node."
            )
        self._log_path = self._home / "logs" / f"{spec['instance_id']}.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_path.touch()
        published = spec["workdir"]
        env = {k: v.replace(published, str(workdir)) for k, v in env.items()}
        confinement = Confinement(
            workdir=workdir,
            owner=spec["model_id"],
            programs=(interpreter,),
            read_only=(RUNTIME_DIR, _JSON_CONVERSIONS, *map(Path, spec["libraries"])),
            network=spec["network"],
        )
        self._sandbox.prepare(confinement)
        host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        listener = socket.create_server((host, 0))
        listener.settimeout(load_timeout)
        with self._lock:
            self._tokens.add(token.encode())
        worker_spec = {**spec["worker"], "workdir": str(workdir)}
        threading.Thread(
            target=self._serve,
            args=(listener, time.monotonic() + load_timeout, spec["runtime"]),
            kwargs={
                "interpreter": interpreter,
                "worker_spec": worker_spec,
                "env": env,
                "confinement": confinement,
            },
            daemon=True,
        ).start()
        self._where = {
            "host": host,
            "port": listener.getsockname()[1],
            "node_id": ray.get_runtime_context().get_node_id(),
            "nonce": spec["env"].get("MODELHOST_INSTANCE_NONCE", ""),
        }
        self._started.set()
        return dict(self._where)

    def _environment(self, wanted: dict[str, str], env: dict[str, str]) -> str:
        """The version's isolated environment on this node: built here from its lock with uv
        (nothing unlocked is installed), cached under the same key as where it was published.
        Paths to it in ``env`` are rewritten to this node's."""
        python = uvenv.Python(path=wanted["python"], version=wanted["version"])
        if not Path(python.path).exists():
            raise errors.EnvironmentFailed(
                f"This node has no Python at {python.path}, which the version's environment "
                "is made from. Install the same Python at the same path on every node."
            )
        found, _ = uvenv.ensure_environment(
            self._settings,
            wanted["lock"],
            python,
            deadline=uvenv.Deadline.after(self._settings),
            log=lambda line: None,
        )
        root = str(found.parent.parent)
        for name, value in env.items():
            env[name] = value.replace(wanted["root"], root)
        return str(found)

    def _working_copy(self, sha256: str, version_id: str, bundle: bytes) -> Path:
        store = BundleStore(self._home / "bundles")
        if not store.path(sha256).exists():
            fd, staging = tempfile.mkstemp(dir=store.root, prefix=".staging-", suffix=".tar")
            with os.fdopen(fd, "wb") as out:
                out.write(bundle)
            os.replace(staging, store.path(sha256))
        workdir = self._home / "work" / version_id
        if not workdir.is_dir():
            store.extract(sha256, workdir)  # checks the sha256 again, extracts member by member
        return workdir

    def _serve(
        self,
        listener: socket.socket,
        deadline: float,
        runtime: str,
        **start: Any,
    ) -> None:
        """Accept the starting server's connection (with its token), start the worker on it,
        then hand the worker every later server's connection until it exits."""
        connection = self._accept(listener, deadline)
        if connection is None:
            listener.close()
            self._finish(None, "the gateway did not connect in time")
            return
        try:
            if runtime == "r":
                self._start_r(connection, deadline=deadline, **start)
            else:
                self._start_python(connection, **start)
        except OSError as exc:
            connection.close()
            listener.close()
            self._finish(None, f"the worker could not be started: {exc}")
            return
        threading.Thread(target=self._admit_more, args=(listener,), daemon=True).start()
        assert self._process is not None
        code = self._process.wait()
        self._finish(self._sandbox.exit_code(code), "")
        with contextlib.suppress(OSError):
            listener.close()
        if isinstance(self._hand_over, socket.socket):
            self._hand_over.close()

    def _admit_more(self, listener: socket.socket) -> None:
        """Hand the worker each later connection that proves itself, until it exits."""
        while not self._done.is_set():
            connection = self._accept(listener, None)
            if connection is None:
                if self._done.is_set() or listener.fileno() < 0:
                    return
                continue
            hand_over = self._hand_over
            if isinstance(hand_over, FrameMux):
                hand_over.add(connection)
                continue
            try:
                assert hand_over is not None
                socket.send_fds(hand_over, [b'{"connection": 1}'], [connection.fileno()])
            except OSError:
                return  # the worker is gone
            finally:
                connection.close()  # the worker has its own copy

    def _accept(self, listener: socket.socket, deadline: float | None) -> socket.socket | None:
        """The next connection that starts with a token given out and not used yet (None
        once ``deadline`` passed, or the listener closed)."""
        while deadline is None or time.monotonic() < deadline:
            wait = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                listener.settimeout(wait)
                connection, _ = listener.accept()
            except OSError:  # a timeout too
                return None
            limit = _TOKEN_SECONDS if deadline is None else max(0.01, deadline - time.monotonic())
            connection.settimeout(limit)
            received = b""
            with contextlib.suppress(OSError):
                while len(received) < TOKEN_LENGTH:
                    chunk = connection.recv(TOKEN_LENGTH - len(received))
                    if not chunk:
                        break
                    received += chunk
            if self._take_token(received):
                connection.settimeout(None)
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return connection
            connection.close()  # not a server of this installation: keep waiting
        return None

    def _take_token(self, received: bytes) -> bool:
        with self._lock:
            for token in self._tokens:
                if hmac.compare_digest(received, token):
                    self._tokens.discard(token)
                    return True
        return False

    # ------------------------------------------------------------------ shared by the servers

    def describe(self) -> dict[str, Any]:
        """What the instance runs (as its starting server said), and how it is doing."""
        return {**self._about, **self.status()}

    def status(self) -> dict[str, Any]:
        """Its memory, and what the servers tell each other through it."""
        return {
            "started": self._started.is_set(),
            "ended": self._done.is_set(),
            "retiring": self._retiring,
            "replacement": self._replacement,
            "memory": self.memory_mb(),
        }

    def admit(self, timeout: float) -> dict[str, Any] | None:
        """A token for one more server's connection, and where to connect; None if the
        instance is not started within ``timeout`` s, has ended, or is being stopped."""
        if not self._started.wait(timeout) or self._done.is_set() or self._retiring:
            return None
        token = secrets.token_hex(TOKEN_LENGTH // 2)
        with self._lock:
            self._tokens.add(token.encode())
        return {**(self._where or {}), "token": token}

    def retire(self) -> None:
        """The leader is stopping the instance: the other servers take it out of rotation,
        finish their calls and let go (they see it in :meth:`status`)."""
        self._retiring = True

    def ask_replacement(self, reason: str, message: str) -> None:
        """A server that is not the leader saw a call time out: the leader replaces it."""
        if self._replacement is None:
            self._replacement = {"reason": reason, "message": message}

    def _spawn(
        self,
        argv: list[str],
        *,
        keep: tuple[int, ...],
        env: dict[str, str],
        confinement: Confinement,
    ) -> None:
        assert self._log_path is not None
        command = self._sandbox.command(argv, confinement)
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                pass_fds=keep,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=confinement.workdir,
                start_new_session=True,
            )

    def _start_python(
        self,
        connection: socket.socket,
        *,
        interpreter: str,
        worker_spec: dict[str, Any],
        env: dict[str, str],
        confinement: Confinement,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [interpreter, "-u", str(_WORKER), "--fd", str(connection.fileno())]
        argv += ["--more-fd", str(theirs.fileno()), "--spec", json.dumps(worker_spec)]
        try:
            keep = (connection.fileno(), theirs.fileno())
            self._spawn(argv, keep=keep, env=env, confinement=confinement)
        except OSError:
            ours.close()
            raise
        finally:
            connection.close()  # the worker has its own copies
            theirs.close()
        self._hand_over = ours

    def _start_r(
        self,
        connection: socket.socket,
        *,
        deadline: float,
        interpreter: str,
        worker_spec: dict[str, Any],
        env: dict[str, str],
        confinement: Confinement,
    ) -> None:
        local = socket.create_server(("127.0.0.1", 0))
        port = local.getsockname()[1]
        argv = [interpreter, "--vanilla", str(RUNTIME_DIR / "worker.R"), "--port", str(port)]
        argv += ["--spec", json.dumps(worker_spec)]
        try:
            self._spawn(argv, keep=(), env=env, confinement=confinement)
            found = self._r_worker(local, env.get("MODELHOST_INSTANCE_NONCE", ""), deadline)
        finally:
            local.close()
        if found is None:  # it exited first, or never proved itself: its exit says why
            connection.close()
            return
        worker, first = found
        worker.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mux = FrameMux(worker, first)
        mux.add(connection)
        self._hand_over = mux

    def _r_worker(
        self, local: socket.socket, nonce: str, deadline: float
    ) -> tuple[socket.socket, bytes] | None:
        """The R worker's connection to its loopback port ``local``, and what was read from it:
        the connection whose first frame (READY or LOAD_FAILED, once it loaded) carries its
        ``nonce``. Any process of the node can connect to the port first; such connections are
        closed, and the worker's own is still taken when it comes. None if the worker exited
        or the load deadline passed first."""
        selector = selectors.DefaultSelector()
        local.setblocking(False)
        selector.register(local, selectors.EVENT_READ)
        candidates: dict[socket.socket, tuple[protocol.FrameDecoder, bytearray]] = {}
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    return None
                for key, _ in selector.select(min(0.5, max(deadline - time.monotonic(), 0))):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is local:
                        with contextlib.suppress(BlockingIOError, InterruptedError):
                            connection, _ = local.accept()
                            connection.setblocking(False)
                            selector.register(connection, selectors.EVENT_READ)
                            candidates[connection] = (protocol.FrameDecoder(), bytearray())
                        continue
                    decoder, seen = candidates[sock]
                    frames: list[tuple[int, bytes]] = []
                    try:
                        data = sock.recv(65536)
                        seen += data
                        frames = decoder.feed(data)
                    except (OSError, protocol.ProtocolError):
                        data = b""
                    if frames and protocol.carries_nonce(*frames[0], nonce):
                        selector.unregister(sock)
                        del candidates[sock]
                        sock.setblocking(True)
                        return sock, bytes(seen)
                    if not data or frames or len(seen) > _FIRST_FRAME_BYTES:
                        selector.unregister(sock)
                        del candidates[sock]
                        sock.close()
                        self._note(
                            "a process that is not the R worker connected to its port; it "
                            "was turned away"
                        )
            return None
        finally:
            for sock in candidates:
                sock.close()
            selector.close()

    def _note(self, message: str) -> None:
        """A line from modelhost in the instance log (the servers relay it into theirs)."""
        if self._log_path is not None:
            with self._log_path.open("ab") as log:
                log.write(server_line(message))

    def _finish(self, code: int | None, why: str) -> None:
        self._exit_code = code
        self._why = why
        self._done.set()

    # ------------------------------------------------------------------ supervising

    def wait(self) -> dict[str, Any]:
        """Block until the worker has exited: its exit code (None if it never started) and
        why, and whether modelhost killed it."""
        self._done.wait()
        return {"code": self._exit_code, "why": self._why, "killed": self._killed}

    def memory_mb(self) -> float | None:
        process = self._process
        if process is None or process.poll() is not None:
            return None
        pid = innermost_pid(process.pid) or process.pid
        try:
            fields = Path(f"/proc/{pid}/statm").read_text().split()
        except OSError:
            return None
        return int(fields[1]) * _PAGE_SIZE / 1e6

    def read_log(self, offset: int) -> tuple[bytes, int]:
        """The instance log's bytes from ``offset`` on (at most 256 KiB), and the next offset."""
        if self._log_path is None:
            return b"", offset
        try:
            with self._log_path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(_MAX_LOG_READ)
        except OSError:
            return b"", offset
        return data, offset + len(data)

    def kill(self) -> None:
        self._killed = True
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
