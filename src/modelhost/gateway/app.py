"""The invocation ASGI handler: ``POST /models/{model}/(latest|versions/{n}|labels/{l})/model``.

Resolve the route from memory, admit the call to an idle instance, forward the body bytes, and
wrap the instance's result bytes in the response envelope (``gateway/envelope.py``) without
parsing them again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from modelhost import errors
from modelhost.backends.base import CallResult, Instance
from modelhost.backends.channel import CallChannel, decode_answer
from modelhost.gateway.auth import TokenGuard
from modelhost.gateway.batching import BatchingPool, Queued
from modelhost.gateway.capture import CaptureQueue
from modelhost.gateway.cycle import RESPOND, InvocationCycle
from modelhost.gateway.envelope import error_response, success
from modelhost.gateway.metrics import CallMetrics
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.requestlog import RequestLog
from modelhost.gateway.routes import ModelRoute, Release, RouteTable

if TYPE_CHECKING:
    from modelhost.gateway.peers import Peers
    from modelhost.gateway.steering import Steering

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: (scope, receive, send, the body if already read): answers the request elsewhere
Forward = Callable[[Scope, Receive, Send, "bytes | None"], Awaitable[None]]

logger = logging.getLogger(__name__)
_random = random.Random()

_JSON_TYPES = (b"application/json", b"text/json")
#: a scope key only :meth:`Gateway.call_in_process` sets (no HTTP request can): the caller was
#: checked already (the tester, through a user's session or API key), so no token is asked for
TRUSTED = "modelhost.trusted"
#: a scope key only :meth:`Gateway.direct` sets: the call it started failed (a :class:`_Failed`)
FAILED = "modelhost.failed"
#: starts a task that runs an ASGI app for the request (the protocol's, in :meth:`Gateway.direct`)
Run = Callable[[Callable[[Scope, Receive, Send], Awaitable[None]]], None]
#: how many times a call that never started (its instance went away first) is sent again
_RESENDS = 2
#: a call that failed with one of these did not run: a gateway process passes it on to the main
#: process, which has the whole route table, every instance, and the say on refused tokens
_NOT_RUN_HERE = (
    errors.CallNotStarted,
    errors.NotFound,
    errors.NoReadyInstance,
    errors.Unauthenticated,
)


#: Every pair of base32 characters (A-Z, 2-7), so that 80 random bits become 16 characters in
#: eight lookups: base64.b32encode is pure Python and costs a few per cent of a fast call.
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PAIRS = [a + b for a in _BASE32 for b in _BASE32]


#: what a version that is not running needs, by its status (``{name}``, ``{number}``)
_NOT_RUNNING = {
    "building": "it is still building; 'modelhost versions {name}' shows when it is ready.",
    "failed": "it failed to build or load; 'modelhost versions {name} --number {number}' says "
    "why. Publish a fixed version.",
    "stopped": "start it with 'modelhost start {name} --version {number}'.",
}
#: a version built but without a ready instance: starting, or neither routed nor started
_STARTING = (
    "its instances are starting, or no route serves it and it was not started "
    "('modelhost start {name} --version {number}' starts it); retry in a moment."
)


def _none_ready(route: ModelRoute) -> str:
    """What to do about a model whose latest route has no version to call."""
    statuses = set(route.statuses.values())
    if "building" in statuses:
        return f"wait for its build to finish ('modelhost versions {route.name}' shows it)."
    if statuses == {"failed"}:
        return (
            f"its versions failed to build or load ('modelhost versions {route.name}' says "
            "why); publish a fixed version."
        )
    return "publish one, or start a version with 'modelhost start'."


def new_request_id() -> str:
    """16 characters, A-Z and 2-7, like the hosted product's request ids. They identify, they
    do not protect anything, so a fast non-cryptographic source is enough."""
    bits = _random.getrandbits(80)
    pairs = _PAIRS
    return (
        pairs[bits >> 70]
        + pairs[(bits >> 60) & 1023]
        + pairs[(bits >> 50) & 1023]
        + pairs[(bits >> 40) & 1023]
        + pairs[(bits >> 30) & 1023]
        + pairs[(bits >> 20) & 1023]
        + pairs[(bits >> 10) & 1023]
        + pairs[bits & 1023]
    )


def _timed_out(route: ModelRoute) -> errors.ModelTimeout:
    return errors.ModelTimeout(
        f"The call did not finish within {route.timeout:g} s (the model's timeout); the "
        "instance is being replaced. Make the function faster or raise the timeout."
    )


def _async_timed_out(timeout: float) -> errors.ModelTimeout:
    return errors.ModelTimeout(
        f"The asynchronous call did not finish within {timeout:g} s (the server setting "
        "async_timeout_seconds, which replaces the model's timeout for asynchronous calls); "
        "the instance is being replaced. Make the function faster or raise "
        "async_timeout_seconds (at most 3600 s)."
    )


def _json_type(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` value says JSON (parameters such as a charset aside)."""
    return content_type.split(b";", 1)[0].strip().lower() in _JSON_TYPES


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's ``Content-Type``, if it has one, says JSON (its body is whole
    already: its ``Content-Length`` needs no check)."""
    for name, value in headers:
        if name == b"content-type":
            return _json_type(value)
    return True


async def _send_answer(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    _scope: Scope,
    _receive: Receive,
    send: Send,
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class _Failed:
    """A call :meth:`Gateway.direct` started, and how it ended: the app goes on with it."""

    started: float
    request_id: str
    route: ModelRoute
    pool: VersionPool
    release: Release
    body: bytes
    error: BaseException


class Gateway:
    """The ASGI app for invocation URLs. ``table`` is replaced whole by the reconciler."""

    def __init__(self, *, max_request_bytes: int) -> None:
        self.table = RouteTable()
        self.max_request_bytes = max_request_bytes
        self.guard = TokenGuard()
        self.metrics = CallMetrics()
        #: one line per call answered here, written in the background (None: no request log)
        self.request_log: RequestLog | None = None
        #: successful calls of models with capture on, for the capture writer's thread
        self.capture = CaptureQueue()
        #: in a gateway process: passes a call it cannot answer to the main server process
        self.forward: Forward | None = None
        #: with gateway processes: the others, to pass a call to one with an idle instance
        self.peers: Peers | None = None
        #: with gateway processes: moves a new connection to the process that holds the
        #: instances its first call goes to
        self.steering: Steering | None = None
        #: invocation path -> where it routes every call, for :attr:`_routed_table`
        self._routed: dict[str, tuple[ModelRoute, int]] = {}
        self._routed_table: RouteTable | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine from the request to the instance's answer, on purpose: every await
        # layer is resumed again when the answer arrives, and at tens of thousands of calls
        # a second those layers cost more than the rest of the gateway's own work.
        failed: _Failed | None = scope.pop(FAILED, None)
        release: Release | None = None
        batched = False  # a batching version's call: its answer is written at once
        if failed is None:
            started = time.perf_counter()
            request_id = new_request_id()
        else:  # a call started by direct() failed: on from where its instance's call ended
            started, request_id = failed.started, failed.request_id
        try:
            peers = self.peers
            if failed is not None:
                route, pool, admitted, body = failed.route, failed.pool, failed.release, failed.body
                release = admitted
                instance = None
                batched = isinstance(pool, BatchingPool)
            else:
                table = self.table
                try:
                    route, pool, admitted = self._admit(scope, request_id)
                    batched = isinstance(pool, BatchingPool)
                except errors.ModelhostError:
                    if self.forward is None:
                        raise
                    await self.forward(scope, receive, send, None)
                    return
                message = await receive()
                if message.get("more_body", False) or message["type"] != "http.request":
                    body = await self._read_rest(receive, message)
                else:
                    body = message.get("body", b"")
                    if len(body) > self.max_request_bytes:
                        raise self._too_large()
            try:
                if failed is None:
                    # Resolve again if the table switched while the body was read: nothing may
                    # await between resolving and joining the pool's queue.
                    if self.table is not table:
                        route, pool, admitted = self._admit(scope, request_id)
                    release = admitted
                    if peers is None:
                        instance = pool.take()
                    else:  # an idle instance, here or in another process
                        other = peers.less_busy(pool, scope)
                        if other is not None and await peers.pass_on(
                            pool, other, scope, receive, send, body
                        ):
                            return
                        instance = pool.take()
                try:
                    if instance is None and failed is None:
                        result, admitted = await self._call(
                            scope["path"], route, pool, admitted, request_id, body
                        )
                    else:
                        try:
                            if failed is not None:
                                raise failed.error
                            assert instance is not None
                            result = await instance.call(request_id, body, route.timeout)
                            if peers is not None:
                                pool.observe(result.model_time_ms / 1000)
                        except errors.CallNotStarted:
                            # Its instance went away before running it: another one may.
                            if instance is not None:
                                pool.release(instance)
                            instance = None
                            route, pool, admitted = self._resolve(scope["path"])
                            result, admitted = await self._call(
                                scope["path"],
                                route,
                                pool,
                                admitted,
                                request_id,
                                body,
                                _RESENDS - 1,
                            )
                        except errors.ModelTimeout:
                            if batched:  # says itself whether it waited or ran too long
                                raise
                            raise _timed_out(route) from None
                        finally:
                            if instance is not None:
                                pool.release(instance)
                except errors.InstanceCrashed:
                    fallback = route.fallbacks.get(admitted.number)
                    if fallback is None or fallback not in route.pools:
                        raise
                    # A version that just took the route crashed on this call: the version it
                    # took the route from is still warm, and answers it instead.
                    self._record(admitted, 502, started, scope["path"])
                    admitted = release = route.releases[fallback]
                    result, admitted = await self._call(
                        scope["path"], route, route.pools[fallback], admitted, request_id, body, 0
                    )
            except _NOT_RUN_HERE as exc:
                if self.forward is not None:  # the main process may have what this one lacks
                    await self.forward(scope, receive, send, body)
                    return
                if isinstance(exc, errors.CallNotStarted):
                    raise errors.InstanceCrashed(str(exc)) from None
                raise
            status = 200
            release = admitted
            body, headers = self._succeeded(
                scope, started, request_id, route, admitted, body, result
            )
        except errors.ModelhostError as exc:
            status, headers, body = error_response(exc, request_id)
            if release is not None:  # the version that was to answer, or that failed
                self._record(release, exc.status, started, scope["path"])
                headers.append((b"x-model-version", release.number_header))
        except Exception as exc:
            logger.exception("request %s failed", request_id)
            status, headers, body = error_response(errors.InternalError(str(exc)), request_id)
        if self.request_log is not None:  # the line now; it is written in the background
            self.request_log.add(started, request_id, scope, status, release, self.table)
        respond = scope.get(RESPOND)
        # A batching version's answers leave at once: written at the end of the loop's turn,
        # their callers' next calls would come after its instance went idle, and the first of
        # them would leave alone (measured: many more batches of one or two).
        if respond is not None and respond(status, headers, body, batched):
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _succeeded(
        self,
        scope: Scope,
        started: float,
        request_id: str,
        route: ModelRoute,
        release: Release,
        body: bytes,
        result: CallResult,
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Record a call ``release`` answered, and its answer's body and headers."""
        timing = (time.perf_counter() - started) * 1000
        self._book(scope, timing, request_id, route, release, body, result)
        return success(result.result_json, request_id, timing, result.model_time_ms, release)

    def _book(
        self,
        scope: Scope,
        timing: float,
        request_id: str,
        route: ModelRoute,
        release: Release,
        body: bytes,
        result: CallResult,
    ) -> None:
        """Record a call ``release`` answered in ``timing`` milliseconds: its metrics and,
        if its model captures calls, perhaps its body and result."""
        self.metrics.record(
            release.model_id,
            release.version_id,
            release.number,
            200,
            timing,
            scope["path"],
            result.model_time_ms,
        )
        if route.capture:  # this model's share of calls to capture; 0.0 when off
            self.capture.add(route.capture, release, request_id, body, result.result_json)

    def direct(self, scope: Scope, cycle: InvocationCycle, run: Run) -> bool:
        """Start the call of an invocation request whose body is in ``cycle`` now, from the
        HTTP protocol, and answer it when the instance does, without a task (with
        ``gateway/transport.py``; the task and its coroutines were about 15 % of a call to a
        tiny function, in process: bench/README.md). Only a call with nothing to wait for
        or to refuse goes this way: an idle instance here, a valid token without limits,
        nothing to pass to another process; or a batching version's call the pool queues,
        to be answered with its batch (``_queue_direct``).
        False: nothing was done, and the protocol runs the app for it as usual, which answers
        every refusal. A started call that fails goes on in the app, in a task (``run``)."""
        started = time.perf_counter()
        if scope.get("client") is None or not scope["path"].endswith("/model"):
            return False  # passed on by another process, or not a call of a function
        try:
            route, number = self._route(scope["path"])
        except errors.ModelhostError:
            return False
        pool = route.pools.get(number)
        if pool is None or route.limits:
            return False
        if route.invocation_mode != "public" and not self.guard.passes(route, scope):
            return False
        body = cycle.body
        if len(body) > self.max_request_bytes or not _is_json(scope["headers"]):
            return False
        peers = self.peers
        if peers is not None and peers.less_busy(pool, scope) is not None:
            return False
        if isinstance(pool, BatchingPool):
            return self._queue_direct(started, scope, cycle, run, route, pool, number, body)
        channel = pool.take()
        if channel is None:
            return False
        if not isinstance(channel, CallChannel):  # its calls need a task
            pool.release(channel)
            return False
        request_id = new_request_id()
        try:
            future = channel.start_call(request_id, body, route.timeout)
        except (errors.ModelhostError, errors.CallNotStarted):  # not ready, or leaving rotation
            pool.release(channel)
            return False
        future.add_done_callback(
            functools.partial(
                self._answered,
                started,
                request_id,
                scope,
                cycle,
                run,
                route,
                pool,
                route.releases[number],
                channel,
                body,
            )
        )
        return True

    def _answered(
        self,
        started: float,
        request_id: str,
        scope: Scope,
        cycle: InvocationCycle,
        run: Run,
        route: ModelRoute,
        pool: VersionPool,
        release: Release,
        held: CallChannel | Queued,
        body: bytes,
        future: asyncio.Future[tuple[int, bytes]],
    ) -> None:
        """The instance answered a call :meth:`direct` started, sent to the instance ``held``
        or, for a batching version, queued as ``held`` (a partial, not a closure: a closure's
        dozen captured variables cost a cell each on every call). A failure goes on in the
        app, as if it had awaited the call. A batching version's answer is written at once
        (see :meth:`__call__` for why)."""
        batched = isinstance(held, Queued)
        if isinstance(held, Queued):
            cast(BatchingPool, pool).settled(held)
        else:
            pool.release(held)  # type: ignore[arg-type]  # every kind of it is an Instance
        try:
            if isinstance(held, CallChannel):
                result = held.end_call(future)
            else:
                result = decode_answer(*future.result())
        except BaseException as exc:  # the app goes on from here, as if it had awaited
            scope[FAILED] = _Failed(started, request_id, route, pool, release, body, exc)
            run(self)
            return
        status = 200
        timing = (time.perf_counter() - started) * 1000
        try:
            answer, headers = success(
                result.result_json, request_id, timing, result.model_time_ms, release
            )
        except Exception as exc:  # as the app answers its own failures: never no answer
            logger.exception("request %s failed", request_id)
            status, headers, answer = error_response(errors.InternalError(str(exc)), request_id)
        if not cycle.respond(status, headers, answer, batched):  # the client reads slowly
            run(functools.partial(_send_answer, status, headers, answer))
        # The answer is on its way: a lone caller does not wait for the bookkeeping.
        try:
            if status == 200:
                if self.peers is not None:
                    pool.observe(result.model_time_ms / 1000)
                self._book(scope, timing, request_id, route, release, body, result)
            else:
                self._record(release, status, started, scope["path"])
            if self.request_log is not None:
                self.request_log.add(started, request_id, scope, status, release, self.table)
        except Exception:
            logger.exception("request %s was answered, but recording it failed", request_id)

    def _queue_direct(
        self,
        started: float,
        scope: Scope,
        cycle: InvocationCycle,
        run: Run,
        route: ModelRoute,
        pool: BatchingPool,
        number: int,
        body: bytes,
    ) -> bool:
        """:meth:`direct` for a batching version: the call joins the pool's queue and is
        answered (:meth:`_answered`) when its batch is; a call the pool refuses is left to the
        app, which answers the refusal."""
        request_id = new_request_id()
        try:
            entry = pool.enqueue(request_id, body, route.timeout)
        except (errors.ModelhostError, errors.CallNotStarted):  # full, closed, or no instance
            return False
        entry.future.add_done_callback(
            functools.partial(
                self._answered,
                started,
                request_id,
                scope,
                cycle,
                run,
                route,
                pool,
                route.releases[number],
                entry,
                body,
            )
        )
        return True

    async def call_in_process(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Call the invocation URL ``path`` with ``body`` from inside the server, as a caller
        who was checked already (no token, no HTTP): the status and the response body, exactly
        as a caller over HTTP would get them. With gateway processes, it may be passed to the
        one that holds an idle instance, which trusts it as this process does."""
        scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "client": None,
            TRUSTED: True,
        }
        answer: dict[str, Any] = {}

        async def receive() -> MutableMapping[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            else:
                answer["body"] = answer.get("body", b"") + message.get("body", b"")

        await self(scope, receive, send)
        return answer["status"], answer.get("body", b"")

    async def call_with_timeout(
        self, path: str, body: bytes, request_id: str, timeout: float
    ) -> tuple[CallResult, Release]:
        """An asynchronous prediction's call (:mod:`modelhost.serving.predictions`): routed and
        admitted like a call to ``path``, with its own ``timeout``; no envelope, no token."""
        route, pool, release = self._resolve(path)
        # The limit that runs out is the server's, not the model's, also for a call sent
        # again after its instance went away (a call that waited for a free instance never
        # ran, and the pool's own message says so).
        return await self._call(
            path,
            route,
            pool,
            release,
            request_id,
            body,
            timeout=timeout,
            timed_out=lambda _route: _async_timed_out(timeout),
        )

    def _admit(self, scope: Scope, request_id: str) -> tuple[ModelRoute, VersionPool, Release]:
        """Everything about a call that needs no body: route, token, method and headers."""
        route, pool, release = self._resolve(scope["path"])
        if route.invocation_mode != "public" and TRUSTED not in scope:
            self.guard.check(route, scope, request_id)
        if scope["method"] != "POST":
            raise errors.MethodNotAllowed(
                "Call a model with POST and a JSON body.", headers={"Allow": "POST"}
            )
        for name, value in scope["headers"]:
            if name == b"content-type":
                if not _json_type(value):
                    raise errors.UnsupportedMediaType(
                        f"Content-Type '{value.decode('latin-1')}' is not supported; send "
                        "the body as JSON with 'Content-Type: application/json'."
                    )
            elif name == b"content-length" and int(value) > self.max_request_bytes:
                raise self._too_large()
        return route, pool, release

    def slot_for(self, path: str) -> int | None:
        """The load board slot of the version an invocation URL routes a call to now, held
        here or by another process; None if none runs."""
        try:
            route, number = self._route(path)
        except errors.ModelhostError:
            return None
        pool = route.pools.get(number)
        return pool.slot if pool is not None else route.slots.get(number)

    def _resolve(self, path: str) -> tuple[ModelRoute, VersionPool, Release]:
        route, number = self._route(path)
        pool = route.pools.get(number)
        if pool is None:
            status = route.statuses.get(number)
            if status is None:
                raise errors.VersionNotFound(f"Model '{route.name}' has no version {number}.")
            raise errors.NoReadyInstance(
                f"Version {number} of model '{route.name}' is not running (status: {status}): "
                + _NOT_RUNNING.get(status, _STARTING).format(name=route.name, number=number),
                headers={"Retry-After": "5"},
            )
        return route, pool, route.releases[number]

    def _route(self, path: str) -> tuple[ModelRoute, int]:
        """The model and version number an invocation URL routes a call to now. A route to
        one version is kept for the paths that use it, until the table is replaced (it is
        replaced whole on every change); a canary's weighted pick is made on every call."""
        table = self.table
        if table is self._routed_table:
            known = self._routed.get(path)
            if known is not None:
                return known
        else:
            self._routed_table, self._routed = table, {}
        route, number, fixed = self._find_route(table, path)
        if fixed and len(self._routed) < 1024:  # made-up paths cannot grow it without end
            self._routed[path] = (route, number)
        return route, number

    def _find_route(self, table: RouteTable, path: str) -> tuple[ModelRoute, int, bool]:
        """:meth:`_route`, and whether every call to ``path`` goes to that version while the
        table stays (no weighted pick)."""
        parts = path.strip("/").split("/")
        # models/{key}/latest/model | models/{key}/versions/{n}/model | .../labels/{l}/model
        if len(parts) < 4 or parts[-1] != "model":
            raise errors.RouteNotFound(
                "Invocation URLs look like /models/{model}/latest/model, "
                "/models/{model}/versions/{n}/model or /models/{model}/labels/{label}/model."
            )
        route = table.find(parts[1])
        if route is None:
            raise errors.ModelNotFound(f"There is no model '{parts[1]}'.")
        if route.state == "archived":
            raise errors.ModelNotFound(
                f"Model '{route.name}' was unpublished; its data is kept. Start it again with "
                f"'modelhost start {route.name}'."
            )
        if route.state == "stopped":
            raise errors.Unavailable(
                f"Model '{route.name}' is stopped; start it with 'modelhost start {route.name}'.",
                headers={"Retry-After": "30"},
            )
        if len(parts) == 4 and parts[2] == "latest":
            key = "latest"
            number = route.pick(key)
            if number is None:
                raise errors.NoReadyInstance(
                    f"Model '{route.name}' has no ready version yet; " + _none_ready(route),
                    headers={"Retry-After": "5"},
                )
        elif len(parts) == 5 and parts[2] == "versions":
            try:
                number = int(parts[3])
            except ValueError:
                raise errors.VersionNotFound(
                    f"'{parts[3]}' is not a version number; use 1, 2, 3…"
                ) from None
            return route, number, True
        elif len(parts) == 5 and parts[2] == "labels":
            key = f"label/{parts[3]}"
            number = route.pick(key)
            if number is None:
                raise errors.RouteNotFound(
                    f"Model '{route.name}' has no label '{parts[3]}'; set one with "
                    f"'modelhost label {route.name} {parts[3]} --version N'."
                )
        else:
            raise errors.RouteNotFound(
                f"Unknown route '{'/'.join(parts[2:-1])}'; use latest, versions/{{n}} or "
                "labels/{label}."
            )
        return route, number, len(route.routes[key]) == 1

    def _too_large(self) -> errors.PayloadTooLarge:
        return errors.PayloadTooLarge(
            f"The request body is over the limit of {self.max_request_bytes} bytes (setting "
            "max_request_bytes)."
        )

    async def _read_rest(self, receive: Receive, first: MutableMapping[str, Any]) -> bytes:
        """The body of a request that came in several messages, ``first`` being the first."""
        limit = self.max_request_bytes
        chunks: list[bytes] = []
        size = 0
        message = first
        while True:
            if message["type"] == "http.disconnect":
                raise errors.BadRequest("The client disconnected before sending the body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()

    async def _call(
        self,
        path: str,
        route: ModelRoute,
        pool: VersionPool,
        release: Release,
        request_id: str,
        body: bytes,
        resends: int = _RESENDS,
        *,
        timeout: float | None = None,
        timed_out: Callable[[ModelRoute], errors.ModelTimeout] = _timed_out,
    ) -> tuple[CallResult, Release]:
        """A call that waits for a free instance of ``release``'s version, or is routed again
        after a lost instance or a version that stopped taking calls; with the result, the
        version that answered. ``timeout`` replaces the model's on every attempt."""
        for attempt in range(resends + 1):
            instance: Instance | None = None
            limit = route.timeout if timeout is None else timeout
            try:
                if isinstance(pool, BatchingPool):  # its calls leave in batches
                    return await pool.submit(request_id, body, limit), release
                instance = await pool.acquire(limit)
                # The function gets the whole timeout once it runs (waiting has its own bound),
                # so a call admitted late never kills a healthy instance for time it waited.
                return await instance.call(request_id, body, limit), release
            except errors.CallNotStarted:
                # Its instance went away before running it, or its version stopped taking
                # calls while it waited: the route may send it elsewhere now.
                if attempt == resends:
                    raise
            except errors.ModelTimeout:
                if instance is None:
                    raise  # it waited its whole timeout for a free instance
                raise timed_out(route) from None
            finally:
                if instance is not None:
                    pool.release(instance)
            route, pool, release = self._resolve(path)
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, release: Release, status: int, started: float, path: str) -> None:
        elapsed = (time.perf_counter() - started) * 1000
        self.metrics.record(
            release.model_id, release.version_id, release.number, status, elapsed, path
        )
