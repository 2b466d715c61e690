"""The Ray backend (setting ``backend = ray``): each instance runs on a node of a Ray cluster.

Ray places, runs and supervises; modelhost's gateway stays the front door. Each instance is a
:class:`~modelhost.backends.ray_node.NodeInstance` actor, placed by Ray (``SPREAD``, so a
version's instances land on different nodes; R instances only on nodes that declare the ``R``
resource). The version's bundle reaches the node through Ray's object store (put once per
bundle) and is checked there against its sha256. On its node the actor starts modelhost's own
worker in the usual sandbox and hands it a TCP connection the gateway opened to it, proven by
a token that only went through Ray. The gateway then sends calls on that connection with the
framed protocol (:class:`CallChannel`), exactly as to a local instance: no Ray hop per call.

Supervision: the actor's :meth:`~NodeInstance.wait` answers when the worker exits; a dead actor
or a lost node fails it, and the instance is EXITED, so the reconciler replaces it (Ray places
the replacement on a node that remains). A call in flight on a connection that broke because
its node went away gets :class:`errors.InstanceLost` (503, retry).

This module imports Ray; nothing imports it unless ``backend = ray``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from modelhost import errors
from modelhost.backends.base import CallResult, Instance, InstanceSpec, InstanceState
from modelhost.backends.channel import CallChannel, Connection
from modelhost.backends.ray_node import NODE_SETTINGS, NodeInstance
from modelhost.builder import uvenv
from modelhost.builder.bundles import BundleStore
from modelhost.runtime import protocol
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

#: the custom resource a node that has R declares (``ray start --resources '{"R": 1}'``)
R_RESOURCE = "R"
#: what one R instance takes of it: a node declaring 1 holds up to 1000 R instances
R_SHARE = 0.001
#: how long a broken connection waits for the actor to report the worker's exit before the
#: node counts as lost
_LOST_AFTER_SECONDS = 2.0
_EXIT_GRACE_SECONDS = 5.0
_POLL_SECONDS = 1.0


def _cause(exc: BaseException) -> str:
    """What went wrong on the node, without Ray's wrapping traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, errors.ModelhostError):
        return cause.message
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def _environment(spec: InstanceSpec) -> dict[str, str] | None:
    """An isolated environment as the node builds it again: its lock and the base Python it
    was made from (the same cache key there), and where it is here, to rewrite paths."""
    if not spec.environment_lock:
        return None
    root = Path(spec.interpreter).parent.parent
    marker = (root / uvenv.READY_MARKER).read_text().splitlines()
    return {
        "lock": spec.environment_lock,
        "python": marker[0],
        "version": marker[1],
        "root": str(root),
    }


def _check_reachable(address: str) -> None:
    """Fail fast on a head node that does not answer (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # "auto", or an address form ray.init checks itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise errors.InvalidSetting(
            f"Cannot join the Ray cluster at ray_address = {address!r}: nothing answers there "
            f"({exc}). Start the head node (ray start --head) or correct the setting."
        ) from None


class RayInstance(CallChannel):
    """An instance on a Ray node: the actor that supervises it, and the connection to its
    worker."""

    def __init__(
        self,
        spec: InstanceSpec,
        on_change: Callable[[], None],
        actor: Any,
    ) -> None:
        super().__init__(spec, InstanceState.STARTING)
        self.exit_code: int | None = None
        #: the Ray node id it runs on, once placed
        self.node: str | None = None
        self._actor = actor
        self._on_change = on_change
        self._nonce = secrets.token_hex(8)
        self._stop_requested = False
        self._lost = False
        self._memory: float | None = None
        self._log_offset = 0
        self._log_lock = asyncio.Lock()
        self._load_timer: asyncio.TimerHandle | None = None
        self._exited = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def instance_name(self) -> str:
        return self.spec.instance_id

    @property
    def pid(self) -> int | None:
        """None: the worker is a process on a Ray node, not on this machine."""
        return None

    def memory_mb(self) -> float | None:
        """The worker's resident memory as its actor last measured it."""
        return self._memory

    def log(self, message: str) -> None:
        """A line from the server about this instance, in the instance's own log."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        line = f"{now.replace('+00:00', 'Z')} server [modelhost] {message}\n"
        with self.spec.log_path.open("ab") as log:
            log.write(line.encode())

    def _spawn(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def begin(self, launch: Coroutine[Any, Any, None]) -> None:
        """Run ``launch`` in the background; an unexpected error fails the instance."""

        async def guarded() -> None:
            try:
                await launch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("instance %s could not be started on Ray", self.spec.instance_id)
                if self.state is InstanceState.STARTING:
                    self._fail(f"The instance could not be started on Ray: {exc}")
                    self.kill()

        self._spawn(guarded())

    # ------------------------------------------------------------------ starting

    async def launch(
        self,
        load_timeout: float,
        bundle: Any,
        node_spec: dict[str, Any],
        wants: str,
        build_timeout: float = 0.0,
    ) -> None:
        """Have the actor set the instance up (placing it, and building its environment there
        within ``build_timeout`` more), connect to it, and wait for READY (reported through
        ``on_change``)."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"starting instance {spec.instance_id} of version {spec.version_number} on Ray")
        self._spawn(self._watch())
        token = secrets.token_hex(16)
        started = self._loop.time()
        try:
            where = await asyncio.wait_for(
                self._ref(self._actor.start.remote(node_spec, bundle, token, load_timeout)),
                load_timeout + build_timeout,
            )
        except asyncio.TimeoutError:
            self._fail(
                f"No Ray node took the instance within {load_timeout:g} s (setting "
                f"load_timeout_seconds). It asks for {wants}; add a node that has it."
            )
            self.kill()
            return
        except ray.exceptions.RayError as exc:
            self._fail(f"The instance could not be set up on its Ray node: {_cause(exc)}")
            self.kill()
            return
        self.node = str(where["node_id"])
        self.log(f"instance {spec.instance_id} placed on Ray node {self.node}, with {wants}")
        try:
            self._transport, _ = await self._loop.create_connection(
                lambda: Connection(self), str(where["host"]), int(where["port"])
            )
        except OSError as exc:
            self._fail(
                f"Could not connect to the instance on Ray node {self.node} at "
                f"{where['host']}:{where['port']}: {exc}. The gateway must reach the nodes."
            )
            self.kill()
            return
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport.write(token.encode())
        remaining = max(0.0, load_timeout - (self._loop.time() - started))
        if self.state is InstanceState.STARTING:
            self._load_timer = self._loop.call_later(remaining, self._load_timed_out, load_timeout)
        self._spawn(self._poll())

    @staticmethod
    async def _ref(ref: Any) -> Any:
        return await ref

    def _load_timed_out(self, load_timeout: float) -> None:
        if self.state is InstanceState.STARTING:
            self._fail(
                f"The instance did not report ready within {load_timeout:g} s (setting "
                "load_timeout_seconds); the script's import takes too long or hangs."
            )
            self.kill()

    def _fail(self, message: str) -> None:
        self.failure = message
        self.state = InstanceState.FAILED
        if self._load_timer:
            self._load_timer.cancel()
        self._on_change()

    # ------------------------------------------------------------------ supervising

    async def _watch(self) -> None:
        """Wait for the actor to report the worker's exit, or for the actor to die."""
        how: str
        try:
            ended = await self._ref(self._actor.wait.remote())
            self.exit_code = ended["code"]
            how = (
                f"exited with code {self.exit_code}"
                if self.exit_code is None or self.exit_code >= 0
                else f"was killed by signal {-self.exit_code}"
            )
            if ended.get("why"):
                how += f" ({ended['why']})"
        except ray.exceptions.RayError as exc:
            self._lost = True
            how = f"was lost with its Ray actor or node ({_cause(exc)})"
        except asyncio.CancelledError:
            raise
        await self._pull_log()
        self._gone(how)
        with contextlib.suppress(Exception):
            ray.kill(self._actor, no_restart=True)

    async def _poll(self) -> None:
        """Copy the worker's log from its node into the instance log, and note its memory."""
        while not self._exited.is_set():
            await self._pull_log()
            try:
                self._memory = await self._ref(self._actor.memory_mb.remote())
            except ray.exceptions.RayError:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited.wait(), _POLL_SECONDS)

    async def _pull_log(self) -> None:
        async with self._log_lock:  # one reader at a time: each byte is copied once
            await self._pull_log_unlocked()

    async def _pull_log_unlocked(self) -> None:
        while True:
            try:
                data, self._log_offset = await self._ref(
                    self._actor.read_log.remote(self._log_offset)
                )
            except ray.exceptions.RayError:
                return
            if not data:
                return
            await asyncio.to_thread(self._append_log, data)

    def _append_log(self, data: bytes) -> None:
        with self.spec.log_path.open("ab") as log:
            log.write(data)

    def _gone(self, how: str) -> None:
        if self._exited.is_set():
            return
        if self.state is InstanceState.STARTING:
            self._fail(f"The instance {how} before it was ready; its log says why.")
        elif self.state is not InstanceState.FAILED:
            if not self._stop_requested:
                self.log(f"instance {self.spec.instance_id} {how}; it will be replaced")
            if self.state is not InstanceState.EXITED:
                self.state = InstanceState.EXITED
                self._on_change()
        self._fail_lost() if self._lost else self._fail_pending()
        self._memory = None
        self._exited.set()
        if self._transport is not None:
            self._transport.close()

    def _fail_lost(self) -> None:
        self._fail_pending(
            errors.InstanceLost(
                f"The connection to the instance running version {self.version_number} on "
                f"Ray node {self.node} broke during the call and the node is gone; whether "
                "the call ran is unknown. Retry it.",
                headers={"Retry-After": "1"},
            )
        )

    def _on_connection_lost(self) -> None:
        if self._exited.is_set() or self.state is InstanceState.STARTING:
            return  # the watcher reports it, with what the actor says
        # No call can go to it any more; it is replaced at once.
        if self.state is InstanceState.READY:
            self.state = InstanceState.EXITED
            self._on_change()
        # The worker exited (the actor says so at once: its calls in flight crashed with it) or
        # its node went away (the actor never answers, or Ray says it died: whether they ran
        # is unknown): wait a little for which.
        self._loop.call_later(_LOST_AFTER_SECONDS, self._connection_broke)

    def _connection_broke(self) -> None:
        if not self._exited.is_set():
            self._lost = True
            self._gone("lost its connection and its Ray node does not answer")
            self.kill()

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind in (protocol.RESULT, protocol.ERROR):
            self._answer(kind, payload)
        elif kind in (protocol.READY, protocol.LOAD_FAILED):
            info = json.loads(payload)
            if self.spec.runtime == "r" and info.get("nonce") != self._nonce:
                self._fail("A process that is not this instance answered on its connection.")
                self.kill()
                return
            if kind == protocol.LOAD_FAILED:
                detail = info.get("traceback") or ""
                self.failure_traceback = detail or None
                self._fail(info["message"] + ("\n" + detail if detail else ""))
                return
            if self._load_timer:
                self._load_timer.cancel()
            self.signature = info.get("signature")
            schema = info.get("schema")
            self.schema = schema if isinstance(schema, dict) else None
            self._spawn(self._ready())

    async def _ready(self) -> None:
        """Ready once what the import wrote on the node is in the instance log here too."""
        await self._pull_log()
        if self.state is InstanceState.STARTING:
            self.state = InstanceState.READY
            self._on_change()

    @property
    def nonce(self) -> str:
        return self._nonce

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        # A call that reaches an instance just taken out of rotation (its node went away) was
        # sent nowhere: the gateway sends it to another instance.
        if self.state is not InstanceState.READY or self._transport is None:
            raise errors.CallNotStarted(
                f"The instance running version {self.version_number} left rotation before "
                "this call was sent; it was not run."
            )
        return await super().call(request_id, body, timeout)

    # ------------------------------------------------------------------ ending

    def kill(self) -> None:
        """Kill the worker (through its actor); the watcher then reports the exit and
        releases the actor."""
        with contextlib.suppress(Exception):
            self._actor.kill.remote()
        if self.state is InstanceState.FAILED and not self._exited.is_set():
            # it may never have been placed: nothing will report an exit
            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)

    def end(self, reason: str, message: str) -> None:
        self.ended_by = reason
        self.log(message)
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self.state = InstanceState.EXITED
        self.kill()
        self._on_change()

    async def stop(self, drain_timeout: float) -> None:
        """Let in-flight calls finish (up to ``drain_timeout``), then end the worker."""
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self._stop_requested = True
            self.state = InstanceState.STOPPING
        await self.drained(drain_timeout)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(protocol.encode(protocol.SHUTDOWN))
        try:
            await asyncio.wait_for(self._exited.wait(), _EXIT_GRACE_SECONDS)
        except asyncio.TimeoutError:
            self.kill()
            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited.wait(), _EXIT_GRACE_SECONDS)
        if self._transport is not None:
            self._transport.close()
        for task in list(self._tasks):
            task.cancel()


class RayBackend:
    """Runs instances as actors on the Ray cluster at ``settings.ray_address``."""

    def __init__(self, settings: Settings, store: BundleStore) -> None:
        self._settings = settings
        self._store = store
        _check_reachable(settings.ray_address)
        try:
            ray.init(
                address=settings.ray_address,
                namespace="modelhost",
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise errors.InvalidSetting(
                f"Cannot join the Ray cluster at ray_address = {settings.ray_address!r}: {exc}. "
                "Start one (ray start --head) or correct the setting."
            ) from None
        self._actor_class = ray.remote(NodeInstance)
        self._node_settings = {name: getattr(settings, name) for name in NODE_SETTINGS}
        self._instances: dict[str, RayInstance] = {}
        self._bundles: dict[str, Any] = {}
        self._listener: Callable[[], None] = lambda: None

    def set_listener(self, listener: Callable[[], None]) -> None:
        self._listener = listener

    def _changed(self) -> None:
        self._listener()

    def _bundle(self, sha256: str) -> Any:
        """The bundle in Ray's object store (put once; every node reads it from there)."""
        ref = self._bundles.get(sha256)
        if ref is None:
            ref = ray.put(self._store.path(sha256).read_bytes())
            self._bundles[sha256] = ref
        return ref

    def _options(self, spec: InstanceSpec) -> tuple[dict[str, Any], str]:
        cpus = float(self._settings.ray_instance_cpus if spec.cpus is None else spec.cpus)
        options: dict[str, Any] = {
            "num_cpus": cpus,
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,
            "max_concurrency": 4,
            "name": f"instance-{spec.instance_id}",
        }
        wants = f"{cpus:g} CPU"
        if spec.memory_mb is not None:  # the hardware tier's: Ray places it where that is free
            options["memory"] = spec.memory_mb * 1024 * 1024
            wants += f", {spec.memory_mb} MB of memory"
        if spec.gpus:
            options["num_gpus"] = spec.gpus
            wants += f", {spec.gpus} GPU(s)"
        if spec.runtime == "r":
            options["resources"] = {R_RESOURCE: R_SHARE}
            wants += f" and the {R_RESOURCE} resource (a node started with --resources "
            wants += f"'{{\"{R_RESOURCE}\": 1}}')"
        return options, wants

    def _node_spec(self, spec: InstanceSpec, nonce: str) -> dict[str, Any]:
        return {
            "instance_id": spec.instance_id,
            "model_id": spec.model_id,
            "version_id": spec.version_id,
            "bundle_sha256": spec.bundle_sha256,
            "workdir": str(spec.workdir),
            "interpreter": spec.interpreter,
            "own_python": spec.runtime == "python" and spec.interpreter == sys.executable,
            "runtime": spec.runtime,
            "network": spec.network,
            "environment": _environment(spec),
            "libraries": [str(path) for path in spec.libraries],
            # only this version's actors get its variables (and secrets)
            "env": {**spec.env, "MODELHOST_INSTANCE_NONCE": nonce},
            "worker": {
                "file": spec.file,
                "function": spec.function,
                "instance": spec.instance_id,
                "concurrency": spec.concurrency,
                "log_requests": spec.log_requests,
                "batch": spec.batch,
            },
        }

    async def start(self, spec: InstanceSpec, load_timeout: float) -> RayInstance:
        if not spec.bundle_sha256:
            raise errors.InternalError(f"instance {spec.instance_id} names no bundle")
        options, wants = self._options(spec)
        bundle = await asyncio.to_thread(self._bundle, spec.bundle_sha256)
        actor = self._actor_class.options(**options).remote(self._node_settings)
        instance = RayInstance(spec, self._changed, actor)
        self._instances[spec.instance_id] = instance
        build = self._settings.environment_build_timeout_seconds if spec.environment_lock else 0.0
        # Placing it, and building its environment on the node, may take long: the reconciler
        # does not wait (its tick serves every model); the instance says when it is ready.
        instance.begin(
            instance.launch(
                load_timeout, bundle, self._node_spec(spec, instance.nonce), wants, float(build)
            )
        )
        return instance

    async def stop(self, instance: Instance, drain_timeout: float) -> None:
        ours = self._instances.pop(instance.spec.instance_id, None)
        if ours is not None:
            await ours.stop(drain_timeout)

    def instances(self) -> list[RayInstance]:
        return list(self._instances.values())

    async def close(self) -> None:
        await asyncio.gather(
            *(self.stop(i, drain_timeout=2.0) for i in self.instances()), return_exceptions=True
        )
        ray.shutdown()
