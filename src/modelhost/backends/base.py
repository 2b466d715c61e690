"""The seam between the control plane and whatever runs instances.

The reconciler asks a backend to start and stop instances from an :class:`InstanceSpec`; the
gateway sends calls to :class:`Instance` objects the backend hands back. The local process
backend is the default; a fake in ``tests/fakes.py`` runs functions in-process for fast tests.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol


def server_line(message: str) -> bytes:
    """A line from the server about an instance, as it goes in the instance's own log."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    return f"{now.replace('+00:00', 'Z')} server [modelhost] {message}\n".encode()


class InstanceState(str, enum.Enum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # never became ready: the script did not load
    STOPPING = "stopping"
    EXITED = "exited"


@dataclass(frozen=True)
class InstanceSpec:
    """Everything an instance needs, validated before anything is spawned."""

    instance_id: str
    model_id: str
    version_id: str
    version_number: int
    workdir: Path
    file: str
    function: str
    #: the program that runs the worker: a Python interpreter, or Rscript for R
    interpreter: str
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    #: calls one instance runs at once
    concurrency: int = 1
    #: write each call's input, output, status and duration to the instance log
    log_requests: bool = False
    #: "python" or "r"
    runtime: str = "python"
    #: whether the code may reach the network (the model's ``network`` setting)
    network: bool = True
    #: the function is a batching function: it takes a list of inputs, returns a list
    batch: bool = False
    #: how long a Python instance polls for its next call before it sleeps
    #: (``runtime/busypoll.py``; setting ``instance_busy_poll_microseconds``), 0 never
    busy_poll_us: int = 0
    #: package libraries the code reads (an R environment's), bound read-only in the sandbox
    libraries: tuple[Path, ...] = ()
    #: start it by forking the version's fork server, which imported the script once (Python
    #: only); False starts it fresh, for libraries that do not survive a fork
    fork: bool = False
    #: the model's generation: a restart gets a new fork server, so a fresh import
    generation: int = 0
    #: the version's bundle (the Ray backend ships it to the node and checks it there)
    bundle_sha256: str = ""
    #: an isolated environment's lock (the Ray backend builds it again on the node from it)
    environment_lock: str = ""
    #: the model's hardware tier: CPUs (local: a cgroup quota or an affinity), memory (MB, its
    #: memory limit) and GPUs (Ray only); None when it picked none
    cpus: float | None = None
    memory_mb: int | None = None
    gpus: int = 0


def spec_for_worker(spec: InstanceSpec) -> dict[str, Any]:
    """What ``runtime/worker.py`` is given as ``--spec`` (JSON) to load and serve ``spec``'s
    function, started fresh or as a fork server."""
    return {
        "workdir": str(spec.workdir),
        "file": spec.file,
        "function": spec.function,
        "instance": spec.instance_id,
        "concurrency": spec.concurrency,
        "log_requests": spec.log_requests,
        "batch": spec.batch,
        "busy_poll_us": spec.busy_poll_us,
    }


class CallResult(NamedTuple):  # a tuple: one is made per call, on the hot path
    model_time_ms: float
    result_json: bytes


class Instance(Protocol):
    """One running process that loaded a version and answers calls."""

    spec: InstanceSpec
    state: InstanceState
    #: why it never became ready (its log's end, or the user's error and traceback)
    failure: str | None
    #: the user's traceback when the script raised on import (also at the end of ``failure``)
    failure_traceback: str | None
    signature: str | None
    #: the function's parameters and result as JSON Schema (``runtime/signatures.py``)
    schema: dict[str, Any] | None
    inflight: int
    #: why modelhost ended the instance ("timeout", "memory"), or None if it ended by itself
    ended_by: str | None

    @property
    def pid(self) -> int | None:
        """The process id, where instances are processes on this machine."""
        ...

    def memory_mb(self) -> float | None:
        """Resident memory of the instance, or None when it cannot be measured."""
        ...

    def end(self, reason: str, message: str) -> None:
        """Kill the instance for ``reason``, writing ``message`` to its log first."""
        ...

    async def call(self, request_id: str, body: bytes, timeout: float) -> CallResult:
        """Run the function on ``body``; raises a :mod:`modelhost.errors` error on failure."""
        ...


class Backend(Protocol):
    """Starts and stops instances and tells the reconciler when one changes state."""

    def set_listener(self, listener: Callable[[], None]) -> None: ...

    async def start(self, spec: InstanceSpec, load_timeout: float) -> Instance: ...

    async def stop(self, instance: Instance, drain_timeout: float) -> None: ...

    def instances(self) -> Sequence[Instance]: ...

    async def close(self) -> None: ...


def unusable_variable(env: Mapping[str, str]) -> str | None:
    """The name of the first variable no process environment can hold (a NUL in its name or
    value, an '=' in its name, or no name), if any: one stored before such values were
    refused would make starting the instance fail with the server's own traceback."""
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            return name.replace("\0", "\\0")
    return None


def unusable_variable_message(env: Mapping[str, str], name: str) -> str:
    model = env.get("MODELHOST_MODEL_NAME", "MODEL")
    return (
        f"The environment variable {name} cannot be set: its name or value contains a NUL "
        f"character or its name contains '='. Set it again without one, or remove it "
        f"('modelhost env unset {model} {name}')."
    )
