"""The reconciler: compares desired state (database) with actual state (backend), forever.

Each tick it records build outcomes reported by instances, starts the instances each model
should have, replaces crashed ones (with back-off), retires versions that no longer serve once
their in-flight and queued calls are done, and hands the gateway a fresh route table. It never
dies on an exception: it logs it and tries again on the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import orjson

from modelhost import __version__
from modelhost.backends.base import Backend, Instance, InstanceSpec, InstanceState
from modelhost.builder.bundles import BundleStore
from modelhost.db.repo import Model, Repo, Version, new_id
from modelhost.gateway.app import Gateway
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.routes import ModelRoute, Release, RouteTable
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

_LIVE = (InstanceState.STARTING, InstanceState.READY)
_MAX_BACKOFF_SECONDS = 60.0


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repo,
        backend: Backend,
        gateway: Gateway,
        store: BundleStore,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.backend = backend
        self.gateway = gateway
        self.store = store
        self._wake = asyncio.Event()
        self._pools: dict[str, VersionPool] = {}
        self._failures: dict[str, int] = defaultdict(int)  # version id -> crashes in a row
        self._not_before: dict[str, float] = {}  # version id -> earliest restart time
        self._retiring: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        backend.set_listener(self.wake)

    def wake(self) -> None:
        """Ask for a tick now (a publish happened, an instance changed state).

        Safe to call from any thread: API routes run in a thread pool.
        """
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                logger.exception("reconcile tick failed; trying again on the next one")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval_seconds)
            self._wake.clear()

    async def reconcile_once(self) -> None:
        async with self._lock:
            await self._reconcile()

    # ------------------------------------------------------------------ one tick

    async def _reconcile(self) -> None:
        models = await asyncio.to_thread(self.repo.list_models)
        versions = await asyncio.to_thread(self._versions_by_model, models)
        by_id = {v.id: v for vs in versions.values() for v in vs}

        await self._record_outcomes(by_id)
        versions = await asyncio.to_thread(self._versions_by_model, models)

        desired: dict[str, tuple[Model, Version]] = {}
        for model in models:
            for version in self._desired_versions(versions[model.id]):
                desired[version.id] = (model, version)

        live: dict[str, list[Instance]] = defaultdict(list)
        for instance in self.backend.instances():
            if instance.state in _LIVE:
                live[instance.spec.version_id].append(instance)

        for version_id, (model, version) in desired.items():
            missing = model.instance_count - len(live[version_id])
            if missing > 0 and time.monotonic() >= self._not_before.get(version_id, 0):
                for _ in range(missing):
                    await self._start(model, version)
            pool = self._pools.get(version_id)
            if version.status == "ready":
                if pool is None:
                    pool = self._pools[version_id] = VersionPool(
                        version_id, version.number, self.settings.max_queued_requests
                    )
                for instance in live[version_id]:
                    if instance.state is InstanceState.READY:
                        pool.add(instance)
                pool.set_starting(
                    sum(
                        1
                        for i in self.backend.instances()
                        if i.spec.version_id == version_id and i.state is InstanceState.STARTING
                    )
                )

        self.gateway.table = self._route_table(models, versions)

        for version_id, instances in live.items():
            if version_id not in desired and version_id not in self._retiring:
                self._spawn(self._retire(version_id, instances))

    def _versions_by_model(self, models: list[Model]) -> dict[str, list[Version]]:
        grouped: dict[str, list[Version]] = {m.id: [] for m in models}
        for version in self.repo.list_all_versions():
            grouped.setdefault(version.model_id, []).append(version)
        return grouped

    @staticmethod
    def _desired_versions(versions: list[Version]) -> list[Version]:
        """Basic routing: the newest ready version serves. Every version still building gets
        an instance too, since its first instance is its build check; once it is ready it
        takes over if it is the newest, and is retired otherwise."""
        ready = [v for v in versions if v.status == "ready"]
        return ready[-1:] + [v for v in versions if v.status == "building"]

    async def _record_outcomes(self, by_id: dict[str, Version]) -> None:
        for instance in self.backend.instances():
            version = by_id.get(instance.spec.version_id)
            if instance.state is InstanceState.READY:
                self._failures.pop(instance.spec.version_id, None)
                if version is not None and version.status == "building":
                    log = version.build_log + (
                        f"Instance {instance.spec.instance_id} imported {version.file} and "
                        f"found {instance.signature or version.function}.\nReady.\n"
                    )
                    await asyncio.to_thread(
                        self.repo.finish_build,
                        version.id,
                        status="ready",
                        log=log,
                        signature=instance.signature,
                    )
            elif instance.state in (InstanceState.FAILED, InstanceState.EXITED):
                self._forget(instance)
                if (
                    version is not None
                    and version.status == "building"
                    and (instance.state is InstanceState.FAILED)
                ):
                    log = version.build_log + "Failed:\n" + (instance.failure or "") + "\n"
                    await asyncio.to_thread(
                        self.repo.finish_build, version.id, status="failed", log=log
                    )
                elif version is not None:
                    self._back_off(version, instance)
                await self.backend.stop(instance, 0)

    def _back_off(self, version: Version, instance: Instance) -> None:
        count = self._failures[version.id] = self._failures[version.id] + 1
        delay = min(_MAX_BACKOFF_SECONDS, 0.5 * 2 ** (count - 1)) if count > 1 else 0.0
        self._not_before[version.id] = time.monotonic() + delay
        logger.warning(
            "instance %s of version %s ended (%s); restarting in %.1f s",
            instance.spec.instance_id,
            version.number,
            instance.failure or instance.state.value,
            delay,
        )

    def _forget(self, instance: Instance) -> None:
        pool = self._pools.get(instance.spec.version_id)
        if pool is not None:
            pool.remove(instance)

    async def _start(self, model: Model, version: Version) -> None:
        workdir = self.workdir(version)
        if not workdir.is_dir():
            await asyncio.to_thread(self.store.extract, version.bundle_sha256, workdir)
        instance_id = new_id()[:12]
        spec = InstanceSpec(
            instance_id=instance_id,
            model_id=model.id,
            version_id=version.id,
            version_number=version.number,
            workdir=workdir,
            file=version.file,
            function=version.function,
            python=self.settings.python or _server_python(),
            log_path=self.log_dir(model.id) / f"v{version.number}-{instance_id}.log",
            env=self._instance_env(model, version, workdir),
        )
        await self.backend.start(spec, self.settings.load_timeout_seconds)

    def _instance_env(self, model: Model, version: Version, workdir: Path) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.settings.instance_env_passthrough if k in os.environ}
        env.setdefault("PATH", os.defpath)
        # One BLAS/OpenMP thread per instance: instances, not threads, are how a model scales.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, "1")
        env.update(
            {
                "HOME": str(workdir),
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "MODELHOST_MODEL_ID": model.id,
                "MODELHOST_MODEL_NAME": model.name,
                "MODELHOST_MODEL_VERSION": str(version.number),
            }
        )
        return env

    def workdir(self, version: Version) -> Path:
        return self.settings.home_path / "work" / version.id

    def log_dir(self, model_id: str) -> Path:
        return self.settings.home_path / "logs" / model_id

    def _route_table(self, models: list[Model], versions: dict[str, list[Version]]) -> RouteTable:
        by_key: dict[str, ModelRoute] = {}
        for model in models:
            pools: dict[int, VersionPool] = {}
            releases: dict[int, Release] = {}
            statuses: dict[int, str] = {}
            latest = None
            for version in versions[model.id]:
                pool = self._pools.get(version.id)
                if (
                    version.status == "ready"
                    and pool is not None
                    and (version.id not in self._retiring)
                ):
                    pools[version.number] = pool
                    releases[version.number] = _release(model, version)
                    latest = version.number
                else:
                    statuses[version.number] = version.status
            route = ModelRoute(
                model_id=model.id,
                name=model.name,
                timeout=model.timeout_seconds or self.settings.timeout_seconds,
                latest=latest,
                pools=pools,
                releases=releases,
                statuses=statuses,
            )
            by_key[model.id] = route
            by_key[model.name] = route
        return RouteTable(by_key)

    async def _retire(self, version_id: str, instances: list[Instance]) -> None:
        """Stop a version that no longer serves, after its queued and in-flight calls."""
        self._retiring.add(version_id)
        try:
            pool = self._pools.get(version_id)
            deadline = time.monotonic() + self.settings.drain_timeout_seconds
            while (
                pool is not None
                and time.monotonic() < deadline
                and (pool.queued or any(i.inflight for i in instances))
            ):
                await asyncio.sleep(0.05)
            if pool is not None:
                for instance in instances:
                    pool.remove(instance)
            await asyncio.gather(
                *(self.backend.stop(i, self.settings.drain_timeout_seconds) for i in instances)
            )
            self._pools.pop(version_id, None)
        finally:
            self._retiring.discard(version_id)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.backend.close()


def _release(model: Model, version: Version) -> Release:
    body = orjson.dumps(
        {
            "harness_version": __version__,
            "model_id": model.id,
            "model_version": version.id,
            "model_version_number": version.number,
        }
    )
    return Release(model.id, version.id, version.number, body)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _server_python() -> str:
    import sys

    return sys.executable
