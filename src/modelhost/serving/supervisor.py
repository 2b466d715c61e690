"""The instance supervisor: starts and stops instances, backs off after crashes, records what
instances report (a build passed or failed, an instance crashed) and ends the ones over the
memory limit.

It starts an instance with the :mod:`~modelhost.serving.children` environment, through the
backend, and tags it with its model's generation (a rolling restart bumps the generation, and
the old instances serve until the new ones are all ready). Stopping is gentle: the instance
leaves rotation at once (:class:`~modelhost.serving.router.Router`), then stops once its calls
are done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from modelhost.backends import cpu_limit
from modelhost.backends.base import Backend, Instance, InstanceSpec, InstanceState
from modelhost.builder import manifests, rlibraries
from modelhost.builder.builds import EnvironmentBuilds
from modelhost.builder.bundles import BundleStore
from modelhost.db.repo import BuildFailure, Model, Repo, Version, new_id
from modelhost.errors import ModelhostError
from modelhost.serving.children import Children
from modelhost.serving.router import Router
from modelhost.settings import Settings

logger = logging.getLogger(__name__)

_LIVE = (InstanceState.STARTING, InstanceState.READY)
MAX_BACKOFF_SECONDS = 60.0
#: Crashes in a row after which a version is marked unhealthy (it keeps being retried).
UNHEALTHY_AFTER = 3


class Supervisor:
    def __init__(
        self,
        *,
        settings: Settings,
        repo: Repo,
        backend: Backend,
        store: BundleStore,
        builds: EnvironmentBuilds,
        children: Children,
        router: Router,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        #: whether this server writes the shared outcomes (a build passed or failed, health):
        #: with several servers on one database only the leader does
        #: (:mod:`modelhost.db.coordination`)
        self.leading = leading
        self.repo = repo
        self.backend = backend
        self.store = store
        self.builds = builds
        self.children = children
        self.router = router
        self._generation: dict[str, int] = {}  # instance id -> model generation it runs
        #: how long instances poll for their next call (``runtime/busypoll.py``): not at all
        #: when the server's own cgroup has a CPU quota, which the polling would spend
        self.busy_poll_us = settings.instance_busy_poll_microseconds
        quota = cpu_limit.own_quota() if self.busy_poll_us else None
        if quota is not None:
            logger.info(
                "Instances sleep until each call: this server's cgroup allows %g CPUs, which "
                "polling for the next call would spend (instance_busy_poll_microseconds).",
                quota,
            )
            self.busy_poll_us = 0
        self._failures: dict[str, int] = defaultdict(int)  # version id -> crashes in a row
        self._not_before: dict[str, float] = {}  # version id -> earliest restart time
        self._stopping: set[Instance] = set()
        self._crashes: set[str] = set()  # versions whose instance crashed this tick
        self._built: set[str] = set()  # versions whose build outcome is recorded
        self._seen_ready: set[str] = set()  # instances already counted as ready
        self._tasks: set[asyncio.Task[None]] = set()
        #: (model id, version number, "start" | "crash" | "restart") -> how many since the
        #: server started, for /metrics
        self.events: dict[tuple[str, int, str], int] = defaultdict(int)

    # ------------------------------------------------------------------ what operations see

    def instances(self) -> Sequence[Instance]:
        """Every instance the backend has, in any state."""
        return self.backend.instances()

    def end_instance(self, instance_id: str, reason: str, message: str) -> None:
        """End an instance by id (a gateway process saw one of its calls time out)."""
        for instance in self.backend.instances():
            if instance.spec.instance_id == instance_id:
                instance.end(reason, message)
                return

    # ------------------------------------------------------------------ state

    def live(self, version_id: str) -> list[Instance]:
        """A version's starting and ready instances that are not being stopped."""
        return [
            i
            for i in self.backend.instances()
            if i.spec.version_id == version_id and i.state in _LIVE and i not in self._stopping
        ]

    def _current(self, instance: Instance, model: Model) -> bool:
        # an instance another server started (a shared backend) says its own generation
        generation = self._generation.get(instance.spec.instance_id, instance.spec.generation)
        return generation == model.generation

    def _manages(self) -> bool:
        """Whether this server starts and stops instances: always, unless the backend's
        instances are shared by several servers (Ray on PostgreSQL); then only the leader
        does, and the others call what it started."""
        return not getattr(self.backend, "shared", False) or self.leading()

    def fully_ready(self, model: Model, version: Version) -> bool:
        """Whether the version has all its instances of the model's generation ready."""
        ready = [
            i
            for i in self.live(version.id)
            if i.state is InstanceState.READY and self._current(i, model)
        ]
        return len(ready) >= model.instance_count

    def crashed(self, version_id: str) -> bool:
        """Whether one of the version's instances crashed this tick."""
        return version_id in self._crashes

    def end_tick(self) -> None:
        self._crashes.clear()

    # ------------------------------------------------------------------ outcomes

    async def record_outcomes(self) -> None:
        """Record what instances reported since the last tick: ready (a build passed, a run of
        crashes ended), failed to load (a build failed) or exited (a crash)."""
        refresh = getattr(self.backend, "refresh", None)
        if refresh is not None:  # a shared backend: find the instances other servers started
            await refresh()
        for instance in self.backend.instances():
            if instance in self._stopping:
                continue
            version_id = instance.spec.version_id
            if instance.state is InstanceState.READY:
                if instance.spec.instance_id not in self._seen_ready:
                    # A freshly ready instance ends a run of crashes.
                    self._seen_ready.add(instance.spec.instance_id)
                    healed = self._failures.pop(version_id, 0) >= UNHEALTHY_AFTER
                    if healed and self.leading():
                        await asyncio.to_thread(
                            self.repo.update_version, version_id, health="ok", health_log=""
                        )
                # Only the leader records a build's outcome, from its own instances (also
                # those that were ready before it began to lead).
                if version_id in self._built or not self.leading():
                    continue
                version = await asyncio.to_thread(self.repo.get_version_by_id, version_id)
                if version is not None and version.status == "building":
                    await asyncio.to_thread(self._build_passed, version, instance)
                self._built.add(version_id)
            elif instance.state in (InstanceState.FAILED, InstanceState.EXITED):
                self.router.take_out(instance, replaced=True)
                self.router.gone(instance)
                version = await asyncio.to_thread(self.repo.get_version_by_id, version_id)
                if version is not None and version.status == "building":
                    if instance.state is InstanceState.FAILED and self.leading():
                        log = version.build_log + "Failed:\n" + (instance.failure or "") + "\n"
                        await asyncio.to_thread(
                            self.repo.finish_build,
                            version.id,
                            status="failed",
                            log=log,
                            failure=load_failure(instance),
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
            version.id,
            status="ready",
            log=log,
            signature=instance.signature,
            signature_schema=schema_text(instance.schema),
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
        self.events[version.model_id, version.number, "crash"] += 1
        delay = 0.0 if count == 1 else min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (count - 1))
        self._not_before[version.id] = time.monotonic() + delay
        reason = instance.failure or f"instance {instance.spec.instance_id} exited"
        if not self._manages():
            logger.warning(
                "version %s of model %s: %s; the leader replaces it",
                version.number,
                version.model_id,
                reason.splitlines()[0],
            )
            return
        logger.warning(
            "version %s of model %s: %s; restarting in %.1f s",
            version.number,
            version.model_id,
            reason.splitlines()[0],
            delay,
        )
        if count == UNHEALTHY_AFTER and self.leading():
            await asyncio.to_thread(
                self.repo.update_version,
                version.id,
                health="unhealthy",
                health_log=f"Crashed {count} times in a row; last: {reason}",
            )

    # ------------------------------------------------------------------ converging

    async def converge(self, model: Model, version: Version) -> None:
        """Give ``version`` exactly ``instance_count`` ready instances of the current
        generation, and put the ready ones of a ready version in rotation."""
        try:
            await self._converge(model, version)
        except Exception as exc:  # one broken version must not stop the others
            await self._cannot_start(model, version, exc)

    async def _converge(self, model: Model, version: Version) -> None:
        if not self._manages():  # the leader starts and stops them; this server calls them
            if version.status == "ready":
                self.router.rotate(version, self.live(version.id))
            return
        instances = self.live(version.id)
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
                self.stop(instance)
        if len(current) > wanted:  # scaled down: stop the extras, starting ones first
            # then those a gateway process holds, so this process keeps one while it can
            extras = sorted(
                current,
                key=lambda i: (i.state is InstanceState.READY, self.router.held_here(i)),
            )
            for instance in extras[: len(current) - wanted]:
                self.stop(instance)
        if version.status == "ready":
            # again: instances were started and stopped above
            self.router.rotate(version, self.live(version.id))

    async def _cannot_start(self, model: Model, version: Version, exc: Exception) -> None:
        message = exc.message if isinstance(exc, ModelhostError) else repr(exc)
        logger.error("cannot start version %s of %s: %s", version.number, model.name, message)
        # Counted as a run of crashes, so the first ready instance clears "unhealthy".
        self._failures[version.id] = max(self._failures[version.id] + 1, UNHEALTHY_AFTER)
        self._not_before[version.id] = time.monotonic() + MAX_BACKOFF_SECONDS
        if not self.leading():
            return  # the leader records it, if its own start fails too
        if version.status == "building":
            reason = f"Could not start an instance: {message}"
            await asyncio.to_thread(
                self.repo.finish_build,
                version.id,
                status="failed",
                log=version.build_log + f"Failed:\n{reason}\n",
                failure=BuildFailure("start", reason),
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
        workdir = self.children.instance_workdir(version.id)
        if workdir.is_dir():  # the code that runs must be the code that was published
            changed = await asyncio.to_thread(manifests.differences, workdir)
            if changed and not self.store.exists(version.bundle_sha256):
                # nothing to extract it from (the extraction would say so): serve it as it is
                logger.warning(
                    "The working copy of %s version %s cannot be checked (%s): its bundle is "
                    "missing.",
                    model.name,
                    version.number,
                    ", ".join(changed),
                )
            elif changed:
                logger.warning(
                    "The working copy of %s version %s differs from its bundle (%s); "
                    "extracting it again.",
                    model.name,
                    version.number,
                    ", ".join(changed),
                )
                await asyncio.to_thread(shutil.rmtree, workdir, True)
        if not workdir.is_dir():
            await asyncio.to_thread(self.store.extract, version.bundle_sha256, workdir)
        env_vars = await asyncio.to_thread(self.repo.list_env, model.id)
        instance_id = new_id()[:12]
        ours = {
            "MODELHOST_MODEL_VERSION": str(version.number),
            "MODELHOST_INSTANCE_ID": instance_id,
        }
        path_prefix = None
        if version.isolated:  # its own environment comes first, as if it were activated
            ours["VIRTUAL_ENV"] = str(Path(interpreter).parent.parent)
            path_prefix = str(Path(interpreter).parent)
        if version.r_library:  # that library and base R only, bound read-only in the sandbox
            ours.update(
                await asyncio.to_thread(rlibraries.instance_env, version.r_library, interpreter)
            )
        env = self.children.env(
            home=workdir, model=model, env_vars=env_vars, ours=ours, path_prefix=path_prefix
        )
        tier = self._tier(model)
        spec = InstanceSpec(
            instance_id=instance_id,
            model_id=model.id,
            version_id=version.id,
            version_number=version.number,
            workdir=workdir,
            file=version.file,
            function=version.function,
            interpreter=interpreter,
            log_path=self.children.log_dir(model.id) / f"v{version.number}-{instance_id}.log",
            env=env,
            concurrency=version.concurrency,
            log_requests=model.log_requests,
            runtime=version.environment_runtime,
            network=model.network,
            batch=version.batch_max_size is not None,
            # not with a share of the CPU, which polling would spend
            busy_poll_us=0 if tier.get("cpus") else self.busy_poll_us,
            libraries=(Path(version.r_library),) if version.r_library else (),
            fork=version.fork,
            generation=model.generation,
            bundle_sha256=version.bundle_sha256,
            environment_lock=(version.environment_lock or "") if version.isolated else "",
            **tier,
        )
        self._generation[instance_id] = model.generation
        await self.backend.start(spec, self.settings.load_timeout_seconds)
        self.events[model.id, version.number, "start"] += 1
        if self._failures.get(version.id):  # replacing an instance that crashed
            self.events[model.id, version.number, "restart"] += 1

    def _tier(self, model: Model) -> dict[str, Any]:
        """What the model's hardware tier gives each instance (nothing without one)."""
        tier = self.settings.hardware_tiers.get(model.tier) if model.tier else None
        if tier is None:
            if model.tier:
                logger.warning(
                    "Model %s picks the hardware tier %s, which setting hardware_tiers no "
                    "longer defines; its instances start without one.",
                    model.name,
                    model.tier,
                )
            return {}
        return {"cpus": tier.cpus, "memory_mb": tier.memory_mb, "gpus": tier.gpus}

    # ------------------------------------------------------------------ stopping

    def stop(self, instance: Instance) -> None:
        """Take an instance out of rotation now; it stops once its calls are done."""
        if instance in self._stopping:
            return
        self._stopping.add(instance)
        self.router.take_out(instance, replaced=False)
        self.router.leaving(instance)
        self._spawn(self._stop_later(instance))

    async def _stop_later(self, instance: Instance) -> None:
        try:
            # a gateway process that holds it finishes its calls first
            await self.router.release(instance, self.settings.drain_timeout_seconds)
            await self.backend.stop(instance, self.settings.drain_timeout_seconds)
        finally:
            self._stopping.discard(instance)
            self._generation.pop(instance.spec.instance_id, None)
            self._seen_ready.discard(instance.spec.instance_id)

    def stop_strays(self, wanted: set[str]) -> None:
        """Stop live instances of versions not in ``wanted`` (nothing runs or routes to them)."""
        if not self._manages():
            return
        for instance in self.backend.instances():
            if (
                instance.state in _LIVE
                and instance not in self._stopping
                and instance.spec.version_id not in wanted
            ):
                self.stop(instance)

    def check_memory(self) -> None:
        """End live instances that use more memory than their tier's, or than
        ``instance_memory_limit_mb``."""
        if not self._manages():
            return
        for instance in self.backend.instances():
            if instance.state not in _LIVE or instance in self._stopping:
                continue
            tier_mb = instance.spec.memory_mb
            limit_mb = tier_mb or self.settings.instance_memory_limit_mb
            if not limit_mb:
                continue
            used = instance.memory_mb()
            if used is not None and used > limit_mb:
                why = "its hardware tier" if tier_mb else "setting instance_memory_limit_mb"
                instance.end(
                    "memory",
                    f"instance {instance.spec.instance_id} uses {used:.0f} MB, over the limit of "
                    f"{limit_mb} MB ({why}); stopping it",
                )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.builds.close()
        await self.backend.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def load_failure(instance: Instance) -> BuildFailure:
    """Why an instance did not load: its message, and the user's traceback apart."""
    failure = instance.failure or f"instance {instance.spec.instance_id} did not load"
    traceback = instance.failure_traceback
    if traceback:
        failure = failure.removesuffix("\n" + traceback)
    return BuildFailure("load", failure, traceback)


#: a description past this size (a huge Pydantic model, say) is not kept: the document then
#: shows the parameters by name only
MAX_SCHEMA_BYTES = 256 * 1024


def schema_text(schema: dict[str, Any] | None) -> str | None:
    """An instance's description of its function, as stored with the version."""
    if not schema:
        return None
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    return text if len(text.encode()) <= MAX_SCHEMA_BYTES else None
