"""The asynchronous prediction queue, run by the main server process.

Predictions wait in the database (``async_predictions``), oldest first. The queue starts one
when its version has room for it: asynchronous calls may keep at most
``async_instance_share`` of a version's instances (in this process) busy, and at least one, so
a flood of them leaves synchronous callers the rest. A prediction is marked ``running`` in the
database before its call starts, and a prediction found ``running`` when the server starts was
interrupted by a stop or a crash: it is marked ``failed`` (code ``interrupted``) and never run
again, so no prediction runs twice. One whose call did not start (no ready instance, a full
queue, its instance gone first) goes back to the queue.

Each call goes through :meth:`modelhost.gateway.app.Gateway.call_with_timeout`, so admission,
routing and the instance protocol are those of every call, with ``async_timeout_seconds``
instead of the model's timeout. When one ends, the model's webhook (if any) gets its view,
signed with HMAC-SHA256. Predictions that ended more than ``async_retention_hours`` ago are
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from modelhost import errors, urls
from modelhost.crypto import ServerKey
from modelhost.db.predictions import FAILED, SUCCEEDED, AsyncPrediction
from modelhost.db.repo import Repo
from modelhost.gateway.app import Gateway
from modelhost.gateway.routes import Release
from modelhost.operations import predictions as ops
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

#: how often the queue looks at the database when nothing wakes it
POLL_SECONDS = 1.0
#: how often predictions past their retention are deleted
PRUNE_SECONDS = 60.0
#: the most queued predictions looked at in one pass
BATCH = 500
#: a webhook call's timeout, and how many times it is tried
WEBHOOK_TIMEOUT_SECONDS = 10.0
WEBHOOK_ATTEMPTS = 3
INTERRUPTED = {
    "code": "interrupted",
    "message": (
        "The server stopped while this prediction was running; it was not run again, since a "
        "prediction runs at most once. Submit it again."
    ),
}
#: errors that mean the call never ran: the prediction waits in the queue again
_NOT_STARTED = (
    errors.CallNotStarted,
    errors.NoReadyInstance,
    errors.QueueFull,
    errors.Unavailable,
)


class PredictionQueue:
    def __init__(
        self,
        *,
        repo: Repo,
        gateway: Gateway,
        settings: Settings,
        key: ServerKey,
        leading: Callable[[], bool] = lambda: True,
    ):
        self.repo = repo
        #: with several servers on one database, the leader alone runs the queue
        self.leading = leading
        self._recovered = False
        self.gateway = gateway
        self.timeout = float(settings.async_timeout_seconds)
        self.share = float(settings.async_instance_share)
        self.retention = dt.timedelta(hours=float(settings.async_retention_hours))
        self.key = key
        self._wake = asyncio.Event()
        #: version id -> asynchronous calls running on it now
        self.busy: dict[str, int] = {}
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pruned = 0.0

    def wake(self) -> None:
        """A prediction was submitted (or a call ended): look at the queue now."""
        self._wake.set()

    def limit(self, ready: int) -> int:
        """How many asynchronous calls a version with ``ready`` instances may run at once."""
        return max(1, math.floor(self.share * ready))

    async def recover(self) -> None:
        """When this server starts leading: predictions left running by the previous server
        (the one that led) failed."""
        ids = await asyncio.to_thread(
            self.repo.fail_running_predictions, orjson.dumps(INTERRUPTED).decode()
        )
        if ids:
            logger.warning(
                "%d asynchronous prediction(s) were running when the server stopped; marked "
                "failed (never run twice): %s",
                len(ids),
                ", ".join(ids[:10]),
            )

    async def run_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                if self.leading():
                    if not self._recovered:  # before this server starts any
                        await self.recover()
                        self._recovered = True
                    await self._prune()
                    await self._dispatch()
            except Exception:
                logger.exception("the asynchronous prediction queue failed; trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._pruned < PRUNE_SECONDS:
            return
        self._pruned = now
        cutoff = dt.datetime.now(dt.timezone.utc) - self.retention
        deleted = await asyncio.to_thread(self.repo.delete_predictions_before, cutoff)
        if deleted:
            logger.info("deleted %d asynchronous prediction(s) past their retention", deleted)

    async def _dispatch(self) -> None:
        queued = await asyncio.to_thread(self.repo.queued_predictions, BATCH)
        for prediction in queued:
            if prediction.id in self._running:
                continue
            path = f"/models/{prediction.model_id}/{prediction.route}/model"
            try:
                route, pool, release = self.gateway._resolve(path)
            except _NOT_STARTED:
                continue  # stopped, starting or busy: it waits
            except errors.ModelhostError as exc:
                # the route is gone (a label removed, a version deleted): it cannot run
                if await asyncio.to_thread(self.repo.start_prediction, prediction.id):
                    self._log(prediction, time.perf_counter(), exc.status, None)
                    await self._finish_failed(prediction, exc)
                continue
            if self.busy.get(pool.version_id, 0) >= self.limit(pool.ready_count):
                continue
            if not await asyncio.to_thread(self.repo.start_prediction, prediction.id):
                continue
            self.busy[pool.version_id] = self.busy.get(pool.version_id, 0) + 1
            self._running.add(prediction.id)
            task = asyncio.get_running_loop().create_task(
                self._run(prediction, path, pool.version_id, release, route.capture)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        prediction: AsyncPrediction,
        path: str,
        version_id: str,
        routed: Release,
        capture: float,
    ) -> None:
        """Run one prediction on the version ``routed`` to when it was taken from the queue,
        capturing a successful call with probability ``capture`` (the model's share, 0.0 when
        capture is off). Every ending that ran is counted and logged under the async route."""
        started = time.perf_counter()
        body = prediction.body.encode()
        try:
            result, release = await self.gateway.call_with_timeout(
                path, body, prediction.request_id, self.timeout
            )
        except _NOT_STARTED:
            await asyncio.to_thread(self.repo.requeue_prediction, prediction.id)
        except errors.ModelhostError as exc:
            self._ended(prediction, started, exc.status, routed)
            await self._finish_failed(prediction, exc)
        except asyncio.CancelledError:
            raise  # the server is stopping: it stays running, and fails at the next start
        except Exception as exc:
            logger.exception("asynchronous prediction %s failed", prediction.id)
            self._ended(prediction, started, 500, routed)
            await self._finish_failed(prediction, errors.InternalError(str(exc)))
        else:
            timing = (time.perf_counter() - started) * 1000
            outcome = b"".join(
                (
                    b'{"result":',
                    result.result_json,
                    b',"request_id":"',
                    prediction.request_id.encode(),
                    b'","timing":',
                    f"{timing:.2f}".encode(),
                    b',"model_time_in_ms":',
                    str(round(result.model_time_ms)).encode(),
                    b',"release":',
                    release.json,
                    b"}",
                )
            )
            self._ended(prediction, started, 200, release, result.model_time_ms)
            if capture:  # as a synchronous call's (docs/privacy.md): successful calls only
                self.gateway.capture.add(
                    capture, release, prediction.request_id, body, result.result_json
                )
            await asyncio.to_thread(
                self.repo.finish_prediction,
                prediction.id,
                status=SUCCEEDED,
                http_status=200,
                outcome=outcome.decode(),
            )
            await self._notify(prediction.id)
        finally:
            self.busy[version_id] -= 1
            if not self.busy[version_id]:
                del self.busy[version_id]
            self._running.discard(prediction.id)
            self.wake()

    def _ended(
        self,
        prediction: AsyncPrediction,
        started: float,
        status: int,
        release: Release,
        model_time_ms: float | None = None,
    ) -> None:
        """A call that ran on ``release`` ended: it counts in the metrics under its async route
        (docs/api.md, Prometheus), and has its request log line with that version."""
        self.gateway.metrics.record(
            release.model_id,
            release.version_id,
            release.number,
            status,
            (time.perf_counter() - started) * 1000,
            urls.invoke_async(release.model_id, prediction.route),
            model_time_ms,
        )
        self._log(prediction, started, status, release)

    def _log(
        self, prediction: AsyncPrediction, started: float, status: int, release: Release | None
    ) -> None:
        """The request log's line for the call, when it ended (the submit has its own)."""
        if self.gateway.request_log is not None:
            scope = {"path": urls.invoke_async(prediction.model_id, prediction.route)}
            self.gateway.request_log.add(
                started, prediction.request_id, scope, status, release, self.gateway.table
            )

    async def _finish_failed(self, prediction: AsyncPrediction, exc: errors.ModelhostError) -> None:
        await asyncio.to_thread(
            self.repo.finish_prediction,
            prediction.id,
            status=FAILED,
            http_status=exc.status,
            error=orjson.dumps(errors.error_body(exc, prediction.request_id)["error"]).decode(),
        )
        await self._notify(prediction.id)

    async def _notify(self, prediction_id: str) -> None:
        """Call the model's webhook with the prediction's view, in the background."""
        prediction = await asyncio.to_thread(self.repo.get_prediction, prediction_id)
        if prediction is None:
            return
        hook = await asyncio.to_thread(self.repo.get_webhook, prediction.model_id)
        if hook is None:
            return
        body = orjson.dumps({"model_id": prediction.model_id, **ops.view(prediction)})
        secret = self.key.decrypt(hook.secret)
        task = asyncio.get_running_loop().create_task(self._post(hook.url, body, secret))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, body: bytes, secret: str) -> None:
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            "User-Agent": "modelhost-webhook",
            ops.SIGNATURE_HEADER: ops.sign(secret, body),
        }
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS) as client:
            for attempt in range(WEBHOOK_ATTEMPTS):
                try:
                    response = await client.post(url, content=body, headers=headers)
                    if response.status_code < 500:
                        if response.is_error:
                            logger.warning("webhook %s answered %s", url, response.status_code)
                        return
                except httpx.HTTPError as exc:
                    logger.warning("webhook %s failed: %s", url, exc)
                await asyncio.sleep(2**attempt)
