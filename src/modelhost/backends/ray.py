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

Several servers on one PostgreSQL database share the instances (``shared``): the actors are
named (``instance-<id>``) and detached, in a namespace of the installation's own, so they
outlive the server that started them. Only the leader starts, replaces and stops them; every
server finds them by name (:meth:`RayBackend.refresh`), asks each actor for a token of its own
and opens its own connection to the worker. A server that is not the leader never ends an
instance: it asks the leader to (a call that timed out), and lets go of one the leader is
stopping once its own calls on it are done. A new leader adopts what it finds.

This module imports Ray; nothing imports it unless ``backend = ray``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from modelhost.backends.base import (
    Instance,
    InstanceSpec,
    InstanceState,
    server_line,
    unusable_variable,
    unusable_variable_message,
)
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
#: how long an actor may wait for a node before its instance shows as pending, and how often
#: the reason (no node has it at all, or the nodes that have it are busy) is asked again
_PENDING_AFTER_SECONDS = 1.0
_PENDING_RECHECK_SECONDS = 5.0
#: what the actors' names start with (the instance id follows)
ACTOR_PREFIX = "instance-"
#: the spec fields an actor keeps for the servers that find it by name
_ABOUT = (
    "instance_id",
    "model_id",
    "version_id",
    "version_number",
    "file",
    "function",
    "concurrency",
    "log_requests",
    "runtime",
    "network",
    "batch",
    "generation",
    "bundle_sha256",
    "cpus",
    "memory_mb",
    "gpus",
)


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


def fits(demand: dict[str, float], nodes: list[dict[str, Any]]) -> bool:
    """Whether some live node of ``nodes`` (:func:`ray.nodes`) has ``demand`` in total, busy
    or not: if none has, the actor cannot be placed until a node that has it joins."""
    return any(
        node.get("Alive")
        and all(
            node.get("Resources", {}).get(name, 0.0) >= amount for name, amount in demand.items()
        )
        for node in nodes
    )


def waiting_message(wants: str, feasible: bool) -> str:
    """What a pending instance says it waits for."""
    if feasible:
        return (
            f"waiting for a Ray node with {wants}: the nodes that have it are busy; it starts "
            "when one of them frees it (or scale other models down)"
        )
    return (
        f"waiting for a Ray node with {wants}: no node in the cluster has that. Add a node "
        "that has it (ray start --address ... with those resources), or pick a smaller "
        "hardware tier"
    )


def namespace_of(key: bytes) -> str:
    """The Ray namespace of an installation's actors, from the server key its servers share:
    its servers find the same instances there, and another installation on the same cluster
    never sees them."""
    return "modelhost-" + hashlib.sha256(b"modelhost ray namespace\0" + key).hexdigest()[:16]


def _about(spec: InstanceSpec) -> dict[str, Any]:
    about = {name: getattr(spec, name) for name in _ABOUT}
    about["log_name"] = spec.log_path.name
    return about


def _spec_from(about: dict[str, Any], log_root: Path) -> InstanceSpec:
    """The spec of an instance another server started, as far as calling it needs."""
    fields = {name: about[name] for name in _ABOUT if name in about}
    return InstanceSpec(
        **fields,
        workdir=Path(),
        interpreter="",
        log_path=log_root / str(about["model_id"]) / str(about["log_name"]),
    )


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
        manages: Callable[[], bool] = lambda: True,
        forget: Callable[[RayInstance, bool], None] = lambda _instance, _for_good: None,
    ) -> None:
        super().__init__(spec, InstanceState.STARTING)
        #: whether this server may end the instance (it is the leader, or alone on its
        #: database); another server only calls it
        self._manages = manages
        self._forget = forget
        self._drain_timeout = 30.0
        self.exit_code: int | None = None
        #: the Ray node id it runs on, once placed
        self.node: str | None = None
        #: why it is not placed yet (no node has what it asks for, or those that have it are
        #: busy); shown as the state ``pending`` with this message. None once placed
        self.waiting: str | None = None
        self._actor = actor
        self._on_change = on_change
        self._nonce = secrets.token_hex(8)
        self._stop_requested = False
        #: this server's stop() runs: the actor's "retiring" is its own doing, not a leader's
        self._stopping = False
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
        with self.spec.log_path.open("ab") as log:
            log.write(server_line(message))

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
        wants: tuple[str, dict[str, float]],
        build_timeout: float = 0.0,
    ) -> None:
        """Wait for Ray to place the actor (as long as it takes: pending meanwhile), have it
        set the instance up (building its environment there within ``build_timeout``),
        connect to it, and wait for READY (reported through ``on_change``)."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"starting instance {spec.instance_id} of version {spec.version_number} on Ray")
        unusable = unusable_variable(spec.env)
        if unusable is not None:  # as the local backend: named, before any node is asked
            message = unusable_variable_message(spec.env, unusable)
            self.log(f"instance {spec.instance_id} load failed: {message}")
            self._fail(message)
            self.kill()  # never placed: the actor is let go
            self._exited.set()
            return
        self._spawn(self._watch())
        try:
            await self._placed(*wants)
        except ray.exceptions.RayError as exc:
            self._fail(f"The instance could not be placed on a Ray node: {_cause(exc)}")
            self.kill()
            return
        token = secrets.token_hex(16)
        started = self._loop.time()
        try:
            where = await asyncio.wait_for(
                self._ref(self._actor.start.remote(node_spec, bundle, token, load_timeout)),
                load_timeout + build_timeout,
            )
        except asyncio.TimeoutError:
            self._fail(
                f"The instance was not set up on its Ray node within {load_timeout:g} s "
                "(setting load_timeout_seconds)."
            )
            self.kill()
            return
        except ray.exceptions.RayError as exc:
            self._fail(f"The instance could not be set up on its Ray node: {_cause(exc)}")
            self.kill()
            return
        self.log(
            f"instance {spec.instance_id} placed on Ray node {where['node_id']}, with {wants[0]}"
        )
        await self._connect(where, token, load_timeout - (self._loop.time() - started))

    async def attach(self, load_timeout: float) -> None:
        """Connect to an instance another server started (or this one, before it restarted):
        a token of this server's own from the actor, then the worker's READY frame again."""
        spec = self.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._spawn(self._watch())
        try:
            ticket = await self._ref(self._actor.admit.remote(load_timeout))
        except ray.exceptions.RayError:
            ticket = None
        if ticket is None:  # not started in time, ended, or being stopped
            if self._manages():  # its server died before it started it, or while stopping it
                self.ended_by = "gone"
                self.state = InstanceState.EXITED  # so the leader's supervisor ends it
            else:  # the leader may still be starting it: look again at a later tick
                self.detach()
                self._forget(self, False)
            self._on_change()
            return
        self._nonce = str(ticket.get("nonce") or "")
        self.log(f"calling instance {spec.instance_id} on Ray node {ticket['node_id']}")
        await self._connect(ticket, str(ticket["token"]), load_timeout)

    async def _connect(self, where: dict[str, Any], token: str, load_timeout: float) -> None:
        """Open this server's connection to the worker, prove it with ``token``, and wait
        (up to ``load_timeout``) for READY."""
        self.node = str(where["node_id"])
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
        if self.state is InstanceState.STARTING:
            self._load_timer = self._loop.call_later(
                max(0.0, load_timeout), self._load_timed_out, load_timeout
            )
        self._spawn(self._poll())

    async def _placed(self, wants: str, demand: dict[str, float]) -> None:
        """Return once Ray has placed the actor on a node. Until then the instance is pending,
        with a message saying what it waits for; it waits as long as that takes (a node that
        fits may join), without failing or being started again."""
        placed = self._loop.create_task(self._ref(self._actor.placed.remote()))
        timeout = _PENDING_AFTER_SECONDS
        try:
            while True:
                done, _ = await asyncio.wait({placed}, timeout=timeout)
                if done:
                    placed.result()
                    break
                timeout = _PENDING_RECHECK_SECONDS
                nodes = await asyncio.to_thread(ray.nodes)
                message = waiting_message(wants, fits(demand, nodes))
                if message != self.waiting:
                    self.waiting = message
                    self.log(f"instance {self.spec.instance_id} is {message}")
                    self._on_change()
        finally:
            placed.cancel()
        if self.waiting is not None:
            self.waiting = None
            self._on_change()

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
        if self._manages():
            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)

    async def _poll(self) -> None:
        """Copy the worker's log from its node into the instance log, note its memory, and
        act on what the servers told each other through the actor: the leader is stopping it
        (let go), or another server asked for its replacement (the leader replaces it)."""
        while not self._exited.is_set():
            await self._pull_log()
            try:
                status = await self._ref(self._actor.status.remote())
            except ray.exceptions.RayError:
                return
            self._memory = status["memory"]
            if status["retiring"] and not self._stop_requested and not self._stopping:
                self._spawn(self._let_go())
            asked = status["replacement"]
            if asked and self._manages() and self.state is InstanceState.READY:
                self.end(asked["reason"], asked["message"] + " (asked by another server)")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited.wait(), _POLL_SECONDS)

    async def _let_go(self) -> None:
        """The leader is stopping the instance: leave rotation, finish this server's calls on
        it, then close this server's connection (the worker ends once every server has)."""
        if self._stop_requested:
            return
        self._stop_requested = True
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self.state = InstanceState.STOPPING
            self._on_change()
        await self.drained(self._drain_timeout)
        self.detach()
        self._forget(self, True)
        if self._manages():  # it leads now, and its predecessor died while stopping it
            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)
        self._on_change()

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

    def start_call(
        self, request_id: str, body: bytes, timeout: float
    ) -> asyncio.Future[tuple[int, bytes]]:
        # A call that reaches an instance just taken out of rotation (its node went away) was
        # sent nowhere: the gateway sends it to another instance.
        if self.state is not InstanceState.READY or self._transport is None:
            raise errors.CallNotStarted(
                f"The instance running version {self.version_number} left rotation before "
                "this call was sent; it was not run."
            )
        return super().start_call(request_id, body, timeout)

    # ------------------------------------------------------------------ ending

    def kill(self) -> None:
        """Kill the worker (through its actor); the watcher then reports the exit and
        releases the actor. A server that does not manage the instance only lets go of it."""
        if not self._manages():
            self.detach()
            return
        with contextlib.suppress(Exception):
            self._actor.kill.remote()
        if self.state is InstanceState.FAILED and not self._exited.is_set():
            # it may never have been placed: nothing will report an exit
            with contextlib.suppress(Exception):
                ray.kill(self._actor, no_restart=True)

    def end(self, reason: str, message: str) -> None:
        if not self._manages():
            # Not ours to end: the leader replaces it. This server stops calling it now.
            with contextlib.suppress(Exception):
                self._actor.ask_replacement.remote(reason, message)
            self.ended_by = reason
            self.log(message + "; asked the leader to replace it")
            if self.state in (InstanceState.READY, InstanceState.STARTING):
                self.state = InstanceState.EXITED
            self._on_change()
            return
        self.ended_by = reason
        self.log(message)
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self.state = InstanceState.EXITED
        self.kill()
        self._on_change()

    def detach(self) -> None:
        """Close this server's connection and stop watching; the instance goes on for the
        other servers."""
        self._memory = None
        self._exited.set()
        if self._transport is not None:
            self._transport.close()
        # No answer comes on this connection any more: calls that never started go to another
        # instance, and the others fail (whether they ran is unknown here)
        self._fail_pending()
        for task in list(self._tasks):
            task.cancel()

    async def stop(self, drain_timeout: float) -> None:
        """Let in-flight calls finish (up to ``drain_timeout``), then end the worker. The other
        servers learn it from the actor first, and let go once their own calls are done."""
        # Also for an instance that already ended (a crash broke its connection): its watcher
        # must still hear the exit from the actor and log it, not let go at the retire below.
        self._stopping = True
        if self.state in (InstanceState.READY, InstanceState.STARTING):
            self._stop_requested = True
            self.state = InstanceState.STOPPING
        with contextlib.suppress(Exception):
            self._actor.retire.remote()
        await self.drained(drain_timeout)
        if self._transport is not None and not self._transport.is_closing():
            self.flush()  # any call still gathered goes before the end
            self._transport.write(protocol.encode(protocol.SHUTDOWN))
        # The worker ends once the other servers sharing it let go, after their own calls:
        # give them the drain timeout too, unless this server's calls are stuck on it.
        grace = _EXIT_GRACE_SECONDS + (0.0 if self.inflight else drain_timeout)
        try:
            await asyncio.wait_for(self._exited.wait(), grace)
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

    def __init__(
        self,
        settings: Settings,
        store: BundleStore,
        *,
        namespace: str = "modelhost",
        shared: bool = False,
        leading: Callable[[], bool] = lambda: True,
        alone: Callable[[], bool] = lambda: True,
    ) -> None:
        self._settings = settings
        self._store = store
        #: several servers on one database share the instances (see the module docstring)
        self.shared = shared
        self._leading = leading
        self._alone = alone
        _check_reachable(settings.ray_address)
        try:
            ray.init(
                address=settings.ray_address,
                namespace=namespace,
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
        #: instances found by name that are being looked at, and those this server let go of
        #: (until their actors are gone)
        self._finding: set[str] = set()
        self._ignored: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._bundles: dict[str, Any] = {}
        self._listener: Callable[[], None] = lambda: None

    def manages(self) -> bool:
        """Whether this server starts, replaces and stops instances: the leader, or a server
        alone on its database."""
        return not self.shared or self._leading()

    def _forget(self, instance: RayInstance, for_good: bool) -> None:
        """Stop listing an instance this server let go of; ``for_good``: do not find it again
        while its actor lives."""
        if self._instances.get(instance.spec.instance_id) is instance:
            del self._instances[instance.spec.instance_id]
        if for_good:
            self._ignored.add(instance.spec.instance_id)

    def _instance(self, spec: InstanceSpec, actor: Any) -> RayInstance:
        instance = RayInstance(spec, self._changed, actor, self.manages, self._forget)
        instance._drain_timeout = float(self._settings.drain_timeout_seconds)
        self._instances[spec.instance_id] = instance
        return instance

    async def refresh(self) -> None:
        """Find the installation's instances by name (``shared`` only): connect to those this
        server does not call yet, started by another server or before this one restarted."""
        if not self.shared:
            return
        names = await asyncio.to_thread(ray.util.list_named_actors)
        found = {n.removeprefix(ACTOR_PREFIX) for n in names if n.startswith(ACTOR_PREFIX)}
        self._ignored &= found
        for instance_id in found - self._instances.keys() - self._finding - self._ignored:
            self._finding.add(instance_id)
            task = asyncio.get_running_loop().create_task(self._find(instance_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _find(self, instance_id: str) -> None:
        try:
            actor = await asyncio.to_thread(ray.get_actor, ACTOR_PREFIX + instance_id)
            about = await self._ref(actor.describe.remote())  # once Ray placed it
            gone = about.get("ended") or about.get("retiring") or about.get("replacement")
            if gone or "model_id" not in about:
                self._ignored.add(instance_id)
                if self.manages():  # its leader died while stopping or replacing it
                    ray.kill(actor, no_restart=True)
                return
            if instance_id in self._instances:
                return
            spec = _spec_from(about, self._settings.home_path / "logs")
            instance = self._instance(spec, actor)
            instance.begin(instance.attach(float(self._settings.load_timeout_seconds)))
            self._changed()
        except (ValueError, ray.exceptions.RayError):
            pass  # gone meanwhile
        finally:
            self._finding.discard(instance_id)

    @staticmethod
    async def _ref(ref: Any) -> Any:
        return await ref

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

    def _options(self, spec: InstanceSpec) -> tuple[dict[str, Any], str, dict[str, float]]:
        """The actor's options, what it asks for in words, and as Ray resources."""
        cpus = float(self._settings.ray_instance_cpus if spec.cpus is None else spec.cpus)
        options: dict[str, Any] = {
            "num_cpus": cpus,
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,
            # each server waits for the worker's exit on a thread of its own
            "max_concurrency": 32,
            "name": ACTOR_PREFIX + spec.instance_id,
        }
        if self.shared:  # it outlives the server that started it: a new leader adopts it
            options["lifetime"] = "detached"
        wants = f"{cpus:g} CPU"
        demand = {"CPU": cpus}
        if spec.memory_mb is not None:  # the hardware tier's: Ray places it where that is free
            options["memory"] = demand["memory"] = spec.memory_mb * 1024 * 1024
            wants += f", {spec.memory_mb} MB of memory"
        if spec.gpus:
            options["num_gpus"] = demand["GPU"] = spec.gpus
            wants += f", {spec.gpus} GPU" + ("s" if spec.gpus > 1 else "")
        if spec.runtime == "r":
            options["resources"] = {R_RESOURCE: R_SHARE}
            demand[R_RESOURCE] = R_SHARE
            wants += f" and the {R_RESOURCE} resource (a node started with --resources "
            wants += f"'{{\"{R_RESOURCE}\": 1}}')"
        return options, wants, demand

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
        options, wants, demand = self._options(spec)
        bundle = await asyncio.to_thread(self._bundle, spec.bundle_sha256)
        actor = self._actor_class.options(**options).remote(self._node_settings, _about(spec))
        instance = self._instance(spec, actor)
        build = self._settings.environment_build_timeout_seconds if spec.environment_lock else 0.0
        # Placing it, and building its environment on the node, may take long: the reconciler
        # does not wait (its tick serves every model); the instance says when it is ready.
        instance.begin(
            instance.launch(
                load_timeout,
                bundle,
                self._node_spec(spec, instance.nonce),
                (wants, demand),
                float(build),
            )
        )
        return instance

    async def stop(self, instance: Instance, drain_timeout: float) -> None:
        instance_id = instance.spec.instance_id
        ours = self._instances.pop(instance_id, None)
        if ours is None:
            return
        if self.manages():
            self._ignored.add(instance_id)  # not found again while it ends
            await ours.stop(drain_timeout)
            return
        # This server stops calling it (it ended, or this server routes no more calls to its
        # version); the leader decides whether it ends. Found again at a later tick if it
        # lives on (its version may be routed to again), unless it ended or is being replaced.
        self._finding.add(instance_id)
        try:
            await ours.drained(drain_timeout)
            ours.detach()
        finally:
            self._finding.discard(instance_id)

    def instances(self) -> list[RayInstance]:
        return list(self._instances.values())

    async def close(self) -> None:
        """Stop the instances, unless other servers share them: then they go on, and the
        next leader manages them."""
        for task in list(self._tasks):
            task.cancel()
        if self.shared and not await asyncio.to_thread(self._alone):
            for instance in self.instances():
                instance.detach()
            self._instances.clear()
        else:
            await asyncio.gather(
                *(self._stop_now(i) for i in self.instances()), return_exceptions=True
            )
        ray.shutdown()

    async def _stop_now(self, instance: RayInstance) -> None:
        self._instances.pop(instance.spec.instance_id, None)
        self._ignored.add(instance.spec.instance_id)
        instance._manages = lambda: True  # the last server ends them, leader or not
        await instance.stop(drain_timeout=2.0)
