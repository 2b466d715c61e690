"""``create_app``: wiring only. Builds the services, the API and the gateway, and joins them.

Invocation URLs (``/models/...``) go straight to the gateway's raw ASGI handler; everything
else goes to the FastAPI control plane, whose lifespan runs the reconciler.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles

from modelhost import __version__, errors, housekeeping, pidfiles, urls
from modelhost.api import access as access_api
from modelhost.api import captures as captures_api
from modelhost.api import environments as environments_api
from modelhost.api import groups as groups_api
from modelhost.api import lifecycle as lifecycle_api
from modelhost.api import model_docs as model_docs_api
from modelhost.api import models as models_api
from modelhost.api import runs as runs_api
from modelhost.api import schedules as schedules_api
from modelhost.api import system as system_api
from modelhost.backends.base import Backend
from modelhost.backends.cpu_limit import open_cpu_limit
from modelhost.backends.local import LocalBackend
from modelhost.builder.bundles import BundleStore
from modelhost.builder.storage import RemoteBundles
from modelhost.crypto import ServerKey
from modelhost.db.coordination import Coordination, for_engine
from modelhost.db.engine import make_engine, migrate
from modelhost.db.repo import Repo
from modelhost.gateway import capture, control
from modelhost.gateway.app import Gateway, Receive, Scope, Send, new_request_id
from modelhost.gateway.process_parent import GatewayProcesses
from modelhost.gateway.requestlog import RequestLog, RequestLogWriter
from modelhost.httpkit import bodies
from modelhost.httpkit import errors as http_errors
from modelhost.httpkit.predictions import PredictionsEndpoint
from modelhost.httpkit.responses import JSONResponse
from modelhost.jobs.runner import Jobs
from modelhost.operations import Services
from modelhost.operations import prometheus as prometheus_ops
from modelhost.operations.audit import RequestInfo, current_request
from modelhost.operations.metrics import CallHistory
from modelhost.reconciler import Reconciler
from modelhost.sandbox import Sandbox, open_sandbox
from modelhost.serving.children import Children
from modelhost.serving.predictions import PredictionQueue
from modelhost.serving.recorder import Recorder
from modelhost.settings import Settings
from modelhost.ui import actions as ui_actions
from modelhost.ui import captures as ui_captures
from modelhost.ui import guard as ui_guard
from modelhost.ui import links as ui_links
from modelhost.ui import pages as ui_pages
from modelhost.ui import render as ui_render
from modelhost.ui import wizard as ui_wizard

logger = logging.getLogger(__name__)


#: Every API router with its prefix; the authentication test walks this same list.
ROUTERS: list[tuple[str, APIRouter]] = [
    ("", system_api.router),
    (urls.API, models_api.router),
    (urls.API, lifecycle_api.router),
    (urls.API, access_api.router),
    (urls.API, access_api.public_router),
    (urls.API, groups_api.router),
    (urls.API, environments_api.router),
    (urls.API, runs_api.router),
    (urls.API, schedules_api.router),
    (urls.API, captures_api.router),
    ("", model_docs_api.router),  # /models/{model}/openapi.json, beside the invocation URLs
]

#: The web UI's routers (under /ui, with a session cookie instead of an API key); the UI's
#: permission test walks this list.
UI_ROUTERS: list[APIRouter] = [
    ui_pages.router,
    ui_actions.router,
    ui_wizard.router,
    ui_captures.router,
]


class ModelhostApp:
    """The whole product as one ASGI app; ``services`` is what it was wired with."""

    def __init__(
        self,
        services: Services,
        gateway: Gateway,
        api: FastAPI,
        jobs: Jobs,
        predictions: PredictionsEndpoint,
    ) -> None:
        self.services = services
        self.api = api
        self.jobs = jobs
        self.gateway = gateway
        #: the asynchronous prediction URLs (main process only)
        self.predictions = predictions
        #: what gateway processes prove themselves with (``gateway_processes`` above 1)
        self.gateway_secret: bytes | None = None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: it hands back the handler's, so an invocation's coroutine
        # chain is one layer shorter (the server must then be told this is ASGI 3).
        if scope.get("client") is None and self.gateway_secret is not None:
            # on the private Unix socket: a gateway process passed it on
            control.keep_caller(scope, self.gateway_secret)
        if scope["type"] == "http" and scope["path"].startswith(urls.INVOKE_PREFIX):
            path = scope["path"]
            if not path.endswith("/model") and self.predictions.handles(path):
                return self.predictions(scope, receive, send)
            if urls.is_invocation(path):  # not a model's OpenAPI document
                return self.gateway(scope, receive, send)
        if scope["type"] == "http" and scope["path"].startswith(urls.HOSTED_ASYNC):
            return self.predictions(scope, receive, send)
        if scope["type"] == "http":
            return self._api_request(scope, receive, send)
        return self.api(scope, receive, send)

    async def _api_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Give each API request an id and its source address, for errors and audit events,
        and a limit on its body."""
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        client = scope.get("client")
        token = current_request.set(RequestInfo(client[0] if client else None, request_id))

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        in_ui = scope["path"].startswith(ui_links.PREFIX)
        limited_receive, limited_send = bodies.limited(
            scope,
            receive,
            send_with_id,
            self.services.settings.max_api_body_bytes,
            answer=ui_render.body_limit_answer if in_ui else None,
        )
        try:
            if in_ui:
                public_url = self.services.settings.public_url
                await ui_guard.guarded(
                    self.api, scope, limited_receive, limited_send, public_url=public_url
                )
            else:
                await self.api(scope, limited_receive, limited_send)
        finally:
            current_request.reset(token)


async def _keep_house(
    home: Path, history: CallHistory, settings: Settings, leading: Callable[[], bool]
) -> None:
    """Remove leftovers of interrupted work older than an hour, and call metrics and captured
    calls older than their retention, every ten minutes. The call metrics are in the shared
    database, so only the leader prunes them; the rest is in this server's data directory."""
    while True:
        try:
            if leading():
                await asyncio.to_thread(history.prune, settings.metrics_retention_days)
            await asyncio.to_thread(
                capture.prune, home / capture.DIRECTORY, settings.capture_retention_days
            )
        except Exception:
            logger.exception("pruning the call metrics or captures failed; trying again later")
        await asyncio.sleep(housekeeping.INTERVAL_SECONDS)
        try:
            await asyncio.to_thread(housekeeping.sweep, home, older_than=housekeeping.STALE_SECONDS)
        except Exception:
            logger.exception("housekeeping failed; trying again later")


def create_api(
    services: Services,
    reconciler: Reconciler,
    jobs: Jobs,
    history: CallHistory,
    recorder: Recorder,
    captures: capture.CaptureWriter,
    queue: PredictionQueue,
    coordination: Coordination,
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        home = services.settings.home_path
        await asyncio.to_thread(housekeeping.sweep, home)  # nothing of ours is running yet
        loop = asyncio.get_running_loop()

        def changed() -> None:  # another server committed a change (from another thread)
            reconciler.wake()
            jobs.wake()
            loop.call_soon_threadsafe(queue.wake)

        # Before the first tick, so the first server of a database leads at once; the queue
        # fails what was running when the last leader stopped when this one starts leading.
        await asyncio.to_thread(coordination.start, changed, changed)
        await reconciler.start()  # gateway processes first: instances are spread over them
        try:  # start instances before serving; a failure here is retried by the loop
            await reconciler.reconcile_once()
        except Exception:
            logger.exception("first reconcile failed; the reconciler keeps trying")
        captures.start()
        tasks = [
            loop.create_task(reconciler.run_forever()),
            loop.create_task(jobs.run_forever()),
            loop.create_task(_keep_house(home, history, services.settings, services.leading)),
            loop.create_task(recorder.run_forever()),
            loop.create_task(queue.run_forever()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await jobs.close()
            await queue.close()
            await reconciler.close()
            await recorder.close()  # after the gateway processes sent their last
            await asyncio.to_thread(captures.stop)  # what is queued is written
            await asyncio.to_thread(coordination.stop)  # another server leads from now on

    api = FastAPI(
        title="modelhost",
        version=__version__,
        description=(
            "Control-plane API of modelhost. Authenticate with 'Authorization: Bearer mh_...'. "
            "Models are invoked at POST /models/{model}/latest/model (see docs/api.md)."
        ),
        openapi_url=urls.OPENAPI,
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONResponse,
        lifespan=lifespan,
    )
    api.state.services = services
    http_errors.install(api, page=ui_render.browser_error)
    api.router.routes.extend(_routes())
    api.mount(
        f"{ui_links.PREFIX}/static",
        StaticFiles(packages=[("modelhost.ui", "static")]),
        name="ui-static",
    )
    return api


@functools.cache
def _routes() -> tuple[BaseRoute, ...]:
    """Every API and UI route, built once per process and shared by the apps made in it.

    FastAPI builds a route's request and response models for each app that includes it (the
    first time that app routes a request through it), which costs more than the rest of
    :func:`create_app` together. The routes hold no state of their own: a handler finds its
    services through ``request.app``."""
    router = APIRouter(default_response_class=JSONResponse)
    for prefix, api_router in ROUTERS:  # every API route documents the error envelope's statuses
        router.include_router(api_router, prefix=prefix, responses=http_errors.ERROR_RESPONSES)
    for ui_router in UI_ROUTERS:
        router.include_router(ui_router)
    return tuple(router.routes)


def _backend(
    settings: Settings,
    sandbox: Sandbox,
    store: BundleStore,
    coordination: Coordination,
    key: ServerKey,
    shared: bool,
) -> Backend:
    """The backend ``settings.backend`` names; Ray is imported only when it is the one. With
    several servers on the database (``shared``) they share the Ray instances."""
    if settings.backend == "ray":
        try:
            from modelhost.backends.ray import RayBackend, namespace_of
        except ImportError:
            raise errors.InvalidSetting(
                "backend = ray needs Ray: pip install 'modelhost[ray]' (here and on every node)."
            ) from None
        return RayBackend(
            settings,
            store,
            namespace=namespace_of(key.path.read_bytes().strip()),
            shared=shared,
            leading=lambda: coordination.leader,
            alone=coordination.alone,
        )
    return LocalBackend(
        sandbox, pids=settings.home_path / pidfiles.RUN_DIRECTORY, cpu=open_cpu_limit(settings)
    )


def create_app(
    settings: Settings,
    *,
    backend: Backend | None = None,
    clock: Callable[[], dt.datetime] | None = None,
    gateways: GatewayProcesses | None = None,
    sandbox: Sandbox | None = None,
) -> ModelhostApp:
    """Wire modelhost for ``settings``; the database schema is brought up to date first.

    ``clock`` (aware UTC datetimes) is what the scheduler takes for "now"; tests pass a fake.
    """
    home = settings.home_path
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    migrate(engine)  # on PostgreSQL under a lock: servers starting together migrate in turn
    repo = Repo(engine)
    coordination = for_engine(engine)
    remote = RemoteBundles(settings.bundle_store) if settings.bundle_store else None
    store = BundleStore(home / "bundles", remote)
    sandbox = sandbox if sandbox is not None else open_sandbox(settings)
    key = ServerKey(home)
    shared = engine.dialect.name == "postgresql"
    runner = (
        backend
        if backend is not None
        else _backend(settings, sandbox, store, coordination, key, shared)
    )
    gateway = Gateway(max_request_bytes=settings.max_request_bytes)
    if settings.request_log:
        gateway.request_log = RequestLog()
    gateway.capture = capture.CaptureQueue(
        settings.capture_queue_records, settings.capture_max_record_bytes
    )
    children = Children(settings, key)
    reconciler = Reconciler(
        settings=settings,
        repo=repo,
        backend=runner,
        gateway=gateway,
        store=store,
        children=children,
        gateways=gateways,
        leading=lambda: coordination.leader,
    )
    history = CallHistory(repo, gateway.metrics)
    sources = prometheus_ops.Sources(
        metrics=gateway.metrics,
        table=lambda: gateway.table,
        supervisor=reconciler.supervisor,
        repo=repo,
        started=time.time(),
        capture=gateway.capture,
    )
    writer = (
        RequestLogWriter(
            children.log_dir,
            max_bytes=settings.request_log_max_bytes,
            backups=settings.request_log_backups,
        )
        if settings.request_log
        else None
    )
    services = Services(
        settings=settings,
        repo=repo,
        store=store,
        key=key,
        sandbox=sandbox,
        children=children,
        reconciler=reconciler,
        routes=reconciler.router,
        metrics=gateway.metrics,
        supervisor=reconciler.supervisor,
        invoke=gateway.call_in_process,
        history=history,
        scrape=prometheus_ops.exposition(sources),
        leading=lambda: coordination.leader,
        announce=coordination.announce,
    )
    if clock is not None:
        services = dataclasses.replace(services, clock=clock)
    jobs = Jobs(services)

    def wake_jobs() -> None:  # a run was queued or a schedule changed: the leader runs them
        jobs.wake()
        coordination.announce()

    services = dataclasses.replace(services, wake_jobs=wake_jobs)
    recorder = Recorder(gateway, history, writer)
    captures = capture.CaptureWriter(gateway.capture, home / capture.DIRECTORY)
    queue = PredictionQueue(
        repo=repo, gateway=gateway, settings=settings, key=key, leading=services.leading
    )

    def wake_predictions() -> None:  # a prediction was submitted: the leader runs the queue
        queue.wake()
        coordination.announce()

    services = dataclasses.replace(services, wake_predictions=wake_predictions)
    api = create_api(services, reconciler, jobs, history, recorder, captures, queue, coordination)
    endpoint = PredictionsEndpoint(services, gateway, wake_predictions)
    app = ModelhostApp(services, gateway, api, jobs, endpoint)
    app.gateway_secret = gateways.secret.encode() if gateways is not None else None
    return app
