"""The reconciler: compares desired state (database) with actual state (backend), forever.

Each tick it records what instances reported (a build passed or failed, an instance died),
plans every model (:mod:`modelhost.planning`), starts and stops instances to match, and hands
the gateway a fresh route table. Switches are zero-downtime: new instances start, a route
moves only once they are all ready, and old instances leave rotation and finish their calls
before they stop. It never dies on an exception: it logs it and tries again next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelhost import __version__
from modelhost.backends.base import Backend, Instance, InstanceSpec, InstanceState
from modelhost.builder.bundles import BundleStore
from modelhost.building import EnvironmentBuilds
from modelhost.crypto import ServerKey
from modelhost.db.repo import EnvVar, Label, Model, Repo, Version, new_id
from modelhost.errors import ModelhostError
from modelhost.gateway.app import Gateway
from modelhost.gateway.auth import Denial
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.processes import GatewayProcesses
from modelhost.gateway.routes import ModelRoute, Release, RouteTable
from modelhost.planning import LABEL_PREFIX, Plan, Targets, plan
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

_LIVE = (InstanceState.STARTING, InstanceState.READY)
_MAX_BACKOFF_SECONDS = 60.0
#: Crashes in a row after which a version is marked unhealthy (it keeps being retried).
UNHEALTHY_AFTER = 3
#: Denied invocations written to the audit log per model per window; the rest are counted.
DENIALS_PER_WINDOW = 20
DENIAL_WINDOW_SECONDS = 60.0


@dataclass
class _Switch:
    """A route that just moved: the old targets stay running until the hold ends."""

    previous: Targets
    until: float


class Reconciler:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repo,
        backend: Backend,
        gateway: Gateway,
        store: BundleStore,
        key: ServerKey,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.backend = backend
        self.gateway = gateway
        self.store = store
        self.key = key
        #: the other gateway processes, when ``gateway_processes`` is above 1 (set by the app)
        self.gateways: GatewayProcesses | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        #: ticks begun and ended, for ``sync``: a thread waits on it for a tick to end
        self._ticks = threading.Condition()
        self._begun = 0
        self._ended = 0
        self._pools: dict[str, VersionPool] = {}
        self._routes: dict[str, dict[str, Targets]] = defaultdict(dict)  # model id -> routes
        self._switches: dict[tuple[str, str], _Switch] = {}  # (model id, route) -> switch
        self._generation: dict[str, int] = {}  # instance id -> model generation it runs
        self._failures: dict[str, int] = defaultdict(int)  # version id -> crashes in a row
        self._not_before: dict[str, float] = {}  # version id -> earliest restart time
        self._stopping: set[Instance] = set()
        self._crashes: set[str] = set()  # versions whose instance crashed this tick
        self._built: set[str] = set()  # versions whose build outcome is recorded
        self._seen_ready: set[str] = set()  # instances already counted as ready
        self._denial_window: dict[str, tuple[float, int, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.builds = EnvironmentBuilds(
            settings=settings, repo=repo, store=store, workdir=self.workdir, wake=self.wake
        )
        backend.set_listener(self.wake)

    # ------------------------------------------------------------------ driving

    def wake(self) -> None:
        """Ask for a tick now (a change was made, an instance changed state).

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

    def sync(self, timeout: float = 5.0) -> bool:
        """Wake the reconciler and wait (up to ``timeout``) for a tick that began after this
        call to end, so that a change just committed is in the route table when an API call
        returns: a token works, a revoked one stops working, a stopped model answers 503.

        Called from a worker thread (API routes run in a thread pool). On the event loop's own
        thread, or before the loop runs, it only wakes: waiting there would block the tick.
        """
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self.wake()
            return False
        with self._ticks:
            target = self._begun + 1
        self.wake()
        with self._ticks:
            return self._ticks.wait_for(lambda: self._ended >= target, timeout)

    async def reconcile_once(self) -> None:
        async with self._lock:
            with self._ticks:
                self._begun += 1
            try:
                await self._reconcile()
            finally:
                with self._ticks:
                    self._ended += 1
                    self._ticks.notify_all()

    def end_instance(self, instance_id: str, reason: str, message: str) -> None:
        """End an instance by id (a gateway process saw one of its calls time out)."""
        for instance in self.backend.instances():
            if instance.spec.instance_id == instance_id:
                instance.end(reason, message)
                return

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.builds.close()
        await self.backend.close()

    # ------------------------------------------------------------------ one tick

    async def _reconcile(self) -> None:
        await self._record_outcomes()
        models, versions, labels, tokens = await asyncio.to_thread(self._snapshot)
        self._check_memory()
        table: dict[str, ModelRoute] = {}
        converged: set[str] = set()
        for model in models:
            model_versions = versions.get(model.id, [])
            by_number = {v.number: v for v in model_versions}
            await self._rollback_crashed_switches(model, by_number)
            model_plan = plan(
                model,
                model_versions,
                labels.get(model.id, []),
                self._routes[model.id],
                lambda n, m=model, vs=by_number: self._fully_ready(m, vs[n]),  # type: ignore[misc]
            )
            self._note_switches(model, model_plan)
            self._routes[model.id] = dict(model_plan.routes)
            keep = set(model_plan.run) | self._held(model.id)
            for version in model_versions:
                if version.number in model_plan.build or version.number in keep:
                    converged.add(version.id)
                    try:
                        await self._converge(model, version)
                    except Exception as exc:  # one broken version must not stop the others
                        await self._cannot_start(model, version, exc)
            route = self._route(model, model_versions, model_plan, keep, tokens.get(model.id, ()))
            table[model.id] = table[model.name] = route
        self.gateway.table = RouteTable(table)
        if self.gateways is not None:
            await self.gateways.publish(self.gateway.table)
        self._retire_unwanted(table, converged)
        self._crashes.clear()
        if self.gateway.guard.denials:
            await asyncio.to_thread(self._audit_denials)

    def _snapshot(
        self,
    ) -> tuple[
        list[Model], dict[str, list[Version]], dict[str, list[Label]], dict[str, tuple[bytes, ...]]
    ]:
        models = self.repo.list_models()
        tokens: dict[str, tuple[bytes, ...]] = defaultdict(tuple)
        for token in self.repo.list_tokens(active=True):
            tokens[token.model_id] += (bytes.fromhex(token.token_hash),)
        versions: dict[str, list[Version]] = defaultdict(list)
        for version in self.repo.list_all_versions():
            versions[version.model_id].append(version)
        labels: dict[str, list[Label]] = defaultdict(list)
        for label in self.repo.list_labels():
            labels[label.model_id].append(label)
        return models, versions, labels, tokens

    def _current(self, instance: Instance, model: Model) -> bool:
        return self._generation.get(instance.spec.instance_id) == model.generation

    def _fully_ready(self, model: Model, version: Version) -> bool:
        ready = [
            i
            for i in self._live(version.id)
            if i.state is InstanceState.READY and self._current(i, model)
        ]
        return len(ready) >= model.instance_count

    # ------------------------------------------------------------------ outcomes

    async def _record_outcomes(self) -> None:
        for instance in self.backend.instances():
            if instance in self._stopping:
                continue
            version_id = instance.spec.version_id
            if instance.state is InstanceState.READY:
                if instance.spec.instance_id in self._seen_ready:
                    continue
                # A freshly ready instance ends a run of crashes.
                self._seen_ready.add(instance.spec.instance_id)
                if self._failures.pop(version_id, 0) >= UNHEALTHY_AFTER:
                    await asyncio.to_thread(
                        self.repo.update_version, version_id, health="ok", health_log=""
                    )
                if version_id in self._built:
                    continue
                version = await asyncio.to_thread(self.repo.get_version_by_id, version_id)
                if version is not None and version.status == "building":
                    await asyncio.to_thread(self._build_passed, version, instance)
                self._built.add(version_id)
            elif instance.state in (InstanceState.FAILED, InstanceState.EXITED):
                self._forget(instance)
                if self.gateways is not None:
                    self.gateways.forget(instance)
                version = await asyncio.to_thread(self.repo.get_version_by_id, version_id)
                if version is not None and version.status == "building":
                    if instance.state is InstanceState.FAILED:
                        log = version.build_log + "Failed:\n" + (instance.failure or "") + "\n"
                        await asyncio.to_thread(
                            self.repo.finish_build, version.id, status="failed", log=log
                        )
                elif version is not None:
                    await self._crashed(version, instance)
                await self.backend.stop(instance, 0)
                self._generation.pop(instance.spec.instance_id, None)
                self._seen_ready.discard(instance.spec.instance_id)

    def _build_passed(self, version: Version, instance: Instance) -> bool:
        log = version.build_log + (
            f"Instance {instance.spec.instance_id} imported {version.file} and found "
            f"{instance.signature or version.function}.\nReady.\n"
        )
        if not self.repo.finish_build(
            version.id, status="ready", log=log, signature=instance.signature
        ):
            return False
        model = self.repo.find_model(version.model_id)
        newest = max((v.number for v in self.repo.list_versions(version.model_id)), default=0)
        if model is not None and version.number == newest:
            # Publishing deploys: in basic routing the new version takes over once ready.
            self.repo.update_model(model.id, deployed_version=version.number)
        return True

    async def _crashed(self, version: Version, instance: Instance) -> None:
        if instance.ended_by is None:  # not stopped by modelhost for a timeout or memory
            self._crashes.add(version.id)
        count = self._failures[version.id] = self._failures[version.id] + 1
        delay = 0.0 if count == 1 else min(_MAX_BACKOFF_SECONDS, 0.5 * 2 ** (count - 1))
        self._not_before[version.id] = time.monotonic() + delay
        reason = instance.failure or f"instance {instance.spec.instance_id} exited"
        logger.warning(
            "version %s of model %s: %s; restarting in %.1f s",
            version.number,
            version.model_id,
            reason.splitlines()[0],
            delay,
        )
        if count == UNHEALTHY_AFTER:
            await asyncio.to_thread(
                self.repo.update_version,
                version.id,
                health="unhealthy",
                health_log=f"Crashed {count} times in a row; last: {reason}",
            )

    def _forget(self, instance: Instance) -> None:
        pool = self._pools.get(instance.spec.version_id)
        if pool is not None:
            pool.remove(instance)
            if instance not in self._stopping:
                pool.expect_replacement()

    # ------------------------------------------------------------------ switches

    def _note_switches(self, model: Model, new: Plan) -> None:
        hold = self.settings.switch_hold_seconds
        for key, targets in new.routes.items():
            before = self._routes[model.id].get(key)
            if before is not None and before != targets:
                self._switches[(model.id, key)] = _Switch(before, time.monotonic() + hold)

    def _held(self, model_id: str) -> set[int]:
        now = time.monotonic()
        held: set[int] = set()
        for (owner, key), switch in list(self._switches.items()):
            if switch.until < now:
                del self._switches[(owner, key)]
            elif owner == model_id:
                held |= {n for n, _ in switch.previous}
        return held

    async def _rollback_crashed_switches(self, model: Model, by_number: dict[int, Version]) -> None:
        """A version that crashes right after going live loses the route it took."""
        for (owner, key), switch in list(self._switches.items()):
            if owner != model.id:
                continue
            current = self._routes[model.id].get(key, ())
            previous = {n for n, _ in switch.previous}
            for number, _ in current:
                version = by_number.get(number)
                if number in previous or version is None or version.id not in self._crashes:
                    continue
                log = version.build_log + (
                    f"Crashed on its first calls after taking route '{key}'; the route went "
                    f"back to version(s) {', '.join(str(n) for n in sorted(previous))}.\n"
                )
                await asyncio.to_thread(
                    self.repo.update_version, version.id, status="failed", build_log=log
                )
                if model.deployed_version == number:
                    fallback = max(previous)
                    await asyncio.to_thread(
                        self.repo.update_model, model.id, deployed_version=fallback
                    )
                if key.startswith(LABEL_PREFIX):  # the label goes back to what it was
                    (main, _), *canary = switch.previous
                    await asyncio.to_thread(
                        self.repo.set_label,
                        model.id,
                        key[len(LABEL_PREFIX) :],
                        main,
                        canary[0][0] if canary else None,
                        canary[0][1] if canary else 0,
                    )
                self._routes[model.id][key] = switch.previous
                del self._switches[(owner, key)]
                break

    # ------------------------------------------------------------------ instances

    async def _converge(self, model: Model, version: Version) -> None:
        """Give ``version`` exactly ``instance_count`` ready instances of the current generation."""
        instances = self._live(version.id)
        current = [i for i in instances if self._current(i, model)]
        old = [i for i in instances if not self._current(i, model)]
        wanted = model.instance_count
        missing = wanted - len(current)
        if missing > 0 and time.monotonic() >= self._not_before.get(version.id, 0):
            for _ in range(missing):
                await self._start(model, version)
        current_ready = [i for i in current if i.state is InstanceState.READY]
        for instance in old:
            # Old-generation instances serve until the new ones are all ready.
            if instance.state is InstanceState.STARTING or len(current_ready) >= wanted:
                self._stop(instance)
        if len(current) > wanted:  # scaled down: stop the extras, starting ones first
            # then those a gateway process holds, so this process keeps one while it can
            extras = sorted(
                current, key=lambda i: (i.state is InstanceState.READY, self._held_here(i))
            )
            for instance in extras[: len(current) - wanted]:
                self._stop(instance)
        if version.status == "ready":
            pool = self._pools.get(version.id)
            capacity = version.concurrency + self.settings.pipeline_depth - 1
            if pool is None or pool.capacity != capacity:
                pool = self._pools[version.id] = VersionPool(
                    version.id,
                    version.number,
                    self.settings.max_queued_requests,
                    capacity=capacity,
                )
            live = self._live(version.id)  # again: instances were started and stopped above
            for instance in live:
                if instance.state is not InstanceState.READY:
                    continue
                if self.gateways is None or self.gateways.keeps(instance):
                    pool.add(instance)
                else:  # a gateway process sends it calls
                    pool.remove(instance)
            pool.set_starting(sum(i.state is InstanceState.STARTING for i in live))

    def _held_here(self, instance: Instance) -> bool:
        """Whether this process sends the instance its calls (not a gateway process)."""
        return self.gateways is None or self.gateways.holder(instance.spec.instance_id) == 0

    def _live(self, version_id: str) -> list[Instance]:
        """A version's starting and ready instances that are not being stopped."""
        return [
            i
            for i in self.backend.instances()
            if i.spec.version_id == version_id and i.state in _LIVE and i not in self._stopping
        ]

    async def _cannot_start(self, model: Model, version: Version, exc: Exception) -> None:
        message = exc.message if isinstance(exc, ModelhostError) else repr(exc)
        logger.error("cannot start version %s of %s: %s", version.number, model.name, message)
        # Counted as a run of crashes, so the first ready instance clears "unhealthy".
        self._failures[version.id] = max(self._failures[version.id] + 1, UNHEALTHY_AFTER)
        self._not_before[version.id] = time.monotonic() + _MAX_BACKOFF_SECONDS
        if version.status == "building":
            await asyncio.to_thread(
                self.repo.finish_build,
                version.id,
                status="failed",
                log=version.build_log + f"Failed:\nCould not start an instance: {message}\n",
            )
        else:
            await asyncio.to_thread(
                self.repo.update_version,
                version.id,
                health="unhealthy",
                health_log=f"Could not start an instance: {message}",
            )

    async def _start(self, model: Model, version: Version) -> None:
        interpreter = await self.builds.interpreter(version)
        if interpreter is None:  # its environment is being built; a later tick starts it
            return
        workdir = self.workdir(version)
        if not workdir.is_dir():
            await asyncio.to_thread(self.store.extract, version.bundle_sha256, workdir)
        env_vars = await asyncio.to_thread(self.repo.list_env, model.id)
        env = self._instance_env(model, version, workdir, env_vars)
        if version.isolated:  # its own environment comes first, as if it were activated
            env["VIRTUAL_ENV"] = str(Path(interpreter).parent.parent)
            env["PATH"] = f"{Path(interpreter).parent}{os.pathsep}{env['PATH']}"
        instance_id = new_id()[:12]
        spec = InstanceSpec(
            instance_id=instance_id,
            model_id=model.id,
            version_id=version.id,
            version_number=version.number,
            workdir=workdir,
            file=version.file,
            function=version.function,
            interpreter=interpreter,
            log_path=self.log_dir(model.id) / f"v{version.number}-{instance_id}.log",
            env=env,
            concurrency=version.concurrency,
            log_requests=model.log_requests,
            runtime=version.environment_runtime,
        )
        self._generation[instance_id] = model.generation
        await self.backend.start(spec, self.settings.load_timeout_seconds)

    def _instance_env(
        self, model: Model, version: Version, workdir: Path, env_vars: list[EnvVar]
    ) -> dict[str, str]:
        env = {k: os.environ[k] for k in self.settings.instance_env_passthrough if k in os.environ}
        env.setdefault("PATH", os.defpath)
        # One BLAS/OpenMP thread per instance: instances, not threads, are how a model scales.
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, "1")
        env["HOME"] = str(workdir)
        for var in env_vars:
            env[var.name] = self.key.decrypt(var.value) if var.secret else var.value
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "MODELHOST_MODEL_ID": model.id,
                "MODELHOST_MODEL_NAME": model.name,
                "MODELHOST_MODEL_VERSION": str(version.number),
            }
        )
        return env

    def _stop(self, instance: Instance) -> None:
        """Take an instance out of rotation now; it stops once its calls are done."""
        if instance in self._stopping:
            return
        self._stopping.add(instance)
        self._forget(instance)
        if self.gateways is not None:
            self.gateways.leaving(instance)
        self._spawn(self._stop_later(instance))

    async def _stop_later(self, instance: Instance) -> None:
        try:
            if self.gateways is not None:  # its gateway process finishes its calls first
                await self.gateways.release(instance, self.settings.drain_timeout_seconds)
            await self.backend.stop(instance, self.settings.drain_timeout_seconds)
        finally:
            self._stopping.discard(instance)
            self._generation.pop(instance.spec.instance_id, None)
            self._seen_ready.discard(instance.spec.instance_id)

    def _retire_unwanted(self, table: dict[str, ModelRoute], converged: set[str]) -> None:
        """Stop instances of versions no model wants running, after their queued calls."""
        wanted = {pool.version_id for route in table.values() for pool in route.pools.values()}
        for version_id, pool in list(self._pools.items()):
            if version_id in wanted:
                continue
            if pool.queued or pool.busy:
                continue  # calls still waiting or running: next tick
            for instance in pool.instances():
                self._stop(instance)
            del self._pools[version_id]
        known = wanted | converged
        for instance in self.backend.instances():
            version_id = instance.spec.version_id
            if (
                instance.state in _LIVE
                and instance not in self._stopping
                and version_id not in known
                and version_id not in self._pools
            ):
                self._stop(instance)

    def _check_memory(self) -> None:
        limit_mb = self.settings.instance_memory_limit_mb
        if not limit_mb:
            return
        for instance in self.backend.instances():
            if instance.state not in _LIVE or instance in self._stopping:
                continue
            used = instance.memory_mb()
            if used is not None and used > limit_mb:
                instance.end(
                    "memory",
                    f"instance {instance.spec.instance_id} uses {used:.0f} MB, over the limit of "
                    f"{limit_mb} MB (setting instance_memory_limit_mb); stopping it",
                )

    # ------------------------------------------------------------------ route table

    def _route(
        self,
        model: Model,
        versions: list[Version],
        model_plan: Plan,
        running: set[int],
        tokens: tuple[bytes, ...],
    ) -> ModelRoute:
        pools: dict[int, VersionPool] = {}
        releases: dict[int, Release] = {}
        statuses: dict[int, str] = {}
        for version in versions:
            pool = self._pools.get(version.id)
            if version.number in running and pool is not None:
                pools[version.number] = pool
                releases[version.number] = _release(model, version)
            elif version.desired_state == "stopped" and version.status == "ready":
                statuses[version.number] = "stopped"
            else:
                statuses[version.number] = version.status
        return ModelRoute(
            model_id=model.id,
            name=model.name,
            timeout=model.timeout_seconds or self.settings.timeout_seconds,
            routes=dict(model_plan.routes),
            pools=pools,
            releases=releases,
            statuses=statuses,
            state=model.state,
            invocation_mode=model.invocation_mode,
            tokens=tokens,
        )

    # ------------------------------------------------------------------ denied calls

    def _audit_denials(self) -> None:
        """Write denied invocations to the audit log, at most a few per model per minute."""
        denials = self.gateway.guard.denials
        now = time.monotonic()
        while denials:
            denial = denials.popleft()
            window_start, written, dropped = self._denial_window.get(denial.model_id, (now, 0, 0))
            if now - window_start > DENIAL_WINDOW_SECONDS:
                if dropped:
                    self._write_denial(denial, f"{dropped} more denied calls not recorded")
                window_start, written, dropped = now, 0, 0
            if written < DENIALS_PER_WINDOW:
                self._write_denial(denial, denial.reason)
                written += 1
            else:
                dropped += 1
            self._denial_window[denial.model_id] = (window_start, written, dropped)

    def _write_denial(self, denial: Denial, reason: str) -> None:
        self.repo.add_audit(
            actor_id=None,
            actor="anonymous",
            action="invoke",
            model_id=denial.model_id,
            model=denial.model,
            version=None,
            source_ip=denial.source_ip,
            outcome="denied",
            request_id=denial.request_id,
            detail=orjson.dumps({"reason": reason}).decode(),
        )

    # ------------------------------------------------------------------ paths and tasks

    def workdir(self, version: Version) -> Path:
        return self.settings.home_path / "work" / version.id

    def log_dir(self, model_id: str) -> Path:
        return self.settings.home_path / "logs" / model_id

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


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
