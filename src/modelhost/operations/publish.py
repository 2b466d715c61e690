"""Publish: an uploaded project archive becomes the next version of a model.

:func:`publish_version` is the one publish, as a user: the API, the UI's wizard and runs that
publish on success all call it (:func:`check_publish` first when the project is still to
arrive, so that a mistake costs no upload). :func:`publish` below it does the work.

Validate the entry point, extract the archive with checks, choose the environment, store the
bundle by its sha256, then create the version row (status ``building``) and wake the
reconciler, which builds the version's environment if it has its own (``builder/builds.py``) and
starts its first instance, the import check. Nothing is recorded until the bundle is safely
stored.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from modelhost import errors
from modelhost.builder import environments, manifests, uvenv
from modelhost.builder.bundles import extract_archive
from modelhost.builder.environments import describe, runtime_for
from modelhost.builder.packing import count_files, human_size
from modelhost.db.repo import Model, NamedEnvironment, User, Version
from modelhost.events import PUBLISH
from modelhost.names import ID_LIKE, NAME_PATTERN, invalid_model_name
from modelhost.operations import Services
from modelhost.operations.access_control import authorize, authorize_action
from modelhost.operations.audit import audited
from modelhost.permissions import ensure_server_permission
from modelhost.urls import without_credentials

R_NAME = re.compile(r"^[A-Za-z.][A-Za-z0-9._]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def validate_model_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or ID_LIKE.match(name):
        raise invalid_model_name(name)
    return name


def validate_entry_point(file: str, function: str) -> tuple[str, str]:
    path = PurePosixPath(file)
    if not file or path.is_absolute() or ".." in path.parts:
        raise errors.BadRequest(
            f"The file '{file}' must be a path inside the project, such as predict.py."
        )
    runtime = runtime_for(file)
    if not (R_NAME.match(function) if runtime == "r" else function.isidentifier()):
        raise errors.BadRequest(
            f"'{function}' is not a valid function name; give the name of a function defined "
            f"in {file}, such as predict."
        )
    return path.as_posix(), function


def validate_source(source: str | None, git_commit: str | None) -> str | None:
    """Where a project came from, as recorded: as given, within limits, but never with a user
    name or password (``https://TOKEN@host/...``) in it."""
    if source is not None and not 0 < len(source) <= 1024:
        raise errors.BadRequest("source must be 1 to 1024 characters, such as git+URL@REF.")
    if git_commit is not None and not _COMMIT.match(git_commit):
        raise errors.BadRequest("git_commit must be a full commit hash (40 hex digits).")
    return None if source is None else without_credentials(source)


def validate_environment(requested: str | None) -> None:
    if requested in (None, "", "auto", *environments.RESERVED):
        return
    if not NAME_PATTERN.match(requested):
        raise errors.BadRequest(
            f"'{requested}' is not an environment: use server, isolated, or the name of an "
            "environment from 'modelhost envs list'."
        )


def _environment(
    services: Services,
    *,
    requested: str | None,
    python: str | None,
    runtime: str,
    tree: Path,
) -> tuple[dict[str, object], str]:
    """The environment columns of a new version, and its build log line."""
    settings = services.settings
    columns: dict[str, object]
    declared = environments.requirements_of(tree) if runtime == "python" else None
    kind = environments.choose(requested, runtime, declared is not None)
    if kind == environments.R:
        return {"environment": kind}, describe(settings, runtime)
    if kind == environments.SERVER:
        if python:
            raise errors.BadRequest(
                "The server environment runs in the server's own Python; to choose a Python "
                "version, publish with --environment isolated (or a named environment)."
            )
        server = uvenv.find_python(settings, None)
        columns = {
            "environment": kind,
            "interpreter": server.path,
            "python_version": server.version,
        }
        return columns, describe(settings, runtime)
    if kind == environments.ISOLATED:
        assert declared is not None
        chosen = uvenv.find_python(settings, python)
        columns = {
            "environment": kind,
            "interpreter": chosen.path,
            "python_version": chosen.version,
        }
        line = f"isolated, from {declared[0]}, Python {chosen.version} ({chosen.path})"
        return columns, line
    named = services.repo.get_environment(kind)
    if named is None:
        how = "--r-library DIR" if runtime == "r" else "--requirements FILE"
        raise errors.EnvironmentNotFound(
            f"There is no environment '{kind}'. 'modelhost envs list' shows them, and "
            f"'modelhost envs create {kind} {how}' makes one."
        )
    if runtime == "r" or named.kind == environments.R:
        return _r_environment(services, named, runtime=runtime, python=python)
    if python and python not in (named.python_version, named.interpreter):
        raise errors.BadRequest(
            f"The environment '{kind}' is locked for Python {named.python_version}; leave out "
            "--python, or create a revision of it for another Python."
        )
    columns = {
        "environment": kind,
        "environment_revision": named.revision,
        "environment_lock": named.lock,
        "interpreter": named.interpreter,
        "python_version": named.python_version,
    }
    line = f"{kind} revision {named.revision}, Python {named.python_version} ({named.interpreter})"
    return columns, line


def _r_environment(
    services: Services, named: NamedEnvironment, *, runtime: str, python: str | None
) -> tuple[dict[str, object], str]:
    """The columns of an R version in the named R environment ``named``."""
    if named.kind != environments.R:
        raise errors.BadRequest(
            f"The environment '{named.name}' is a Python environment; an R script runs in R: "
            "publish it without --environment, or with an R environment ('modelhost envs "
            "create NAME --r-library DIR')."
        )
    if runtime != "r":
        raise errors.BadRequest(
            f"The environment '{named.name}' is an R library; a Python script needs server, "
            "isolated, or a Python environment."
        )
    if python:
        raise errors.BadRequest("--python is for Python environments; leave it out.")
    describe(services.settings, runtime)  # fails clearly when R is missing
    library = named.r_library or ""
    if not Path(library).is_dir():
        raise errors.BadRequest(
            f"The R library of environment '{named.name}' ({library}) is not on the server "
            "any more; ask an admin to restore it, or register another with 'modelhost envs "
            f"create {named.name} --r-library DIR'."
        )
    columns: dict[str, object] = {
        "environment": named.name,
        "environment_revision": named.revision,
        "r_library": library,
    }
    line = f"{named.name} revision {named.revision}: R ({named.interpreter}), library {library}"
    return columns, line


MAX_CONCURRENCY = 64
#: an example input is a request body to show and send, not data: it stays small
MAX_EXAMPLE_BYTES = 64 * 1024
#: the file in a project that holds its example input, when the publish gives none
EXAMPLE_FILE = "example.json"


def validate_example(text: str | None, where: str = "The example") -> str | None:
    """``text`` as the example input of a version, or None: a JSON object with a ``data``
    object or a ``parameters`` array (not both), stored as compact JSON text."""
    if text is None:
        return None
    if len(text.encode()) > MAX_EXAMPLE_BYTES:
        raise errors.BadRequest(
            f"{where} is over {MAX_EXAMPLE_BYTES // 1024} KiB; an example input is one small "
            "request body."
        )
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise errors.BadRequest(
            f"{where} is not valid JSON ({exc}); give a request body such as "
            '{"data": {"x": 1}} or {"parameters": [1]}.'
        ) from None
    has_data = isinstance(value, dict) and "data" in value
    has_parameters = isinstance(value, dict) and "parameters" in value
    if not isinstance(value, dict) or has_data == has_parameters or len(value) != 1:
        raise errors.BadRequest(
            f"{where} must be a JSON object with exactly one key, 'data' (an object of keyword "
            "arguments) or 'parameters' (an array of positional arguments), such as "
            '{"data": {"x": 1}}.'
        )
    if has_data and not isinstance(value["data"], dict):
        raise errors.BadRequest(
            where + """ has 'data' that is not an object; use {"data": {"x": 1}}."""
        )
    if has_parameters and not isinstance(value["parameters"], list):
        raise errors.BadRequest(
            where + """ has 'parameters' that is not an array; use {"parameters": [1, 2]}."""
        )
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _project_example(tree: Path) -> str | None:
    """The example input in the project's ``example.json``, if it has one."""
    path = tree / EXAMPLE_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise errors.BadRequest(f"The project's {EXAMPLE_FILE} is not UTF-8 text.") from None
    return validate_example(text, f"The project's {EXAMPLE_FILE}")


def validate_concurrency(concurrency: int) -> int:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise errors.BadRequest(
            f"concurrency is the number of calls one instance runs at once: 1 to "
            f"{MAX_CONCURRENCY} (use more than 1 only if the function is thread-safe)."
        )
    return concurrency


#: the largest batch a batching function may be given, and the longest wait for company
MAX_BATCH_SIZE = 1024
MAX_BATCH_WAIT_MS = 10_000.0
#: how long calls wait for company while every instance is busy, unless the publish says
DEFAULT_BATCH_WAIT_MS = 5.0


def validate_batching(
    max_size: int | None, max_wait_ms: float | None
) -> tuple[int | None, float | None]:
    """The batching limits of a version: (None, None) for a function that takes one call's
    arguments, else its largest batch and its longest wait (a default when not given)."""
    if max_size is None:
        if max_wait_ms is not None:
            raise errors.BadRequest(
                "batch_max_wait_ms needs batch_max_size: give both to publish a batching "
                "function (one that takes a list of inputs and returns a list of results)."
            )
        return None, None
    if not 1 <= max_size <= MAX_BATCH_SIZE:
        raise errors.BadRequest(
            f"batch_max_size is the most calls one batch holds: 1 to {MAX_BATCH_SIZE}."
        )
    if max_wait_ms is None:
        max_wait_ms = DEFAULT_BATCH_WAIT_MS
    if not 0 <= max_wait_ms <= MAX_BATCH_WAIT_MS:  # also refuses NaN
        raise errors.BadRequest(
            f"batch_max_wait_ms is how long calls wait for company while every instance is "
            f"busy: 0 to {MAX_BATCH_WAIT_MS:g} milliseconds."
        )
    return max_size, float(max_wait_ms)


def check_new_model(services: Services, actor: User, name: str) -> None:
    """A model may be created with ``name`` by ``actor`` (setting ``model_creators``)."""
    validate_model_name(name)
    ensure_server_permission(actor, "create-model", services.settings)


@dataclass(frozen=True)
class PublishRequest:
    """A new version of ``model`` (its id or name; a new name creates the model)."""

    model: str
    file: str
    function: str
    description: str = ""
    concurrency: int = 1
    environment: str | None = None
    python: str | None = None
    source: str | None = None
    git_commit: str | None = None
    #: the client's Idempotency-Key: a publish retried with it returns the version it made
    idempotency_key: str | None = None
    #: an example input (JSON text); None takes the project's example.json, if any
    example: str | None = None
    #: a batching function's largest batch (None: not a batching function), and longest wait
    batch_max_size: int | None = None
    batch_max_wait_ms: float | None = None
    #: fork instances from a process that imported the script once (False: start each fresh)
    fork: bool = True


#: what an Idempotency-Key may be: printable ASCII without spaces, as a header can carry it
_KEY_CHARACTERS = frozenset(chr(c) for c in range(0x21, 0x7F))
MAX_KEY_LENGTH = 128


def validate_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not set(key) <= _KEY_CHARACTERS:
        raise errors.BadRequest(
            f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} printable ASCII "
            "characters without spaces, such as a UUID; send a new one for each publish."
        )
    return key


def publishable(services: Services, actor: User, key: str) -> Model:
    """The existing model ``key`` names, if ``actor`` may publish to it (the wizard's form)."""
    return authorize(services, actor, key, "publish")


def check_publish(services: Services, actor: User, request: PublishRequest) -> Model | None:
    """Everything about a publish that can be checked before the project arrives: who may
    (a refusal is audited), and what. Returns the model, or None when it is new."""
    existing = services.repo.find_model(request.model)
    if existing is None:
        check_new_model(services, actor, request.model)
    else:
        authorize_action(services, actor, request.model, PUBLISH)
    validate_entry_point(request.file, request.function)
    validate_concurrency(request.concurrency)
    validate_environment(request.environment)
    validate_source(request.source, request.git_commit)
    validate_example(request.example)
    validate_batching(request.batch_max_size, request.batch_max_wait_ms)
    return existing


def publish_version(
    services: Services,
    actor: User,
    request: PublishRequest,
    archive: BinaryIO,
    *,
    detail: dict[str, Any] | None = None,
    then: Callable[[Version], None] | None = None,
) -> tuple[Model, Version]:
    """Publish ``archive`` (a .tar.gz project) as the next version, as ``actor``: checked,
    stored, and audited in one transaction with ``detail`` added to the event; ``then`` runs
    in that transaction with the new version (a run records that it published)."""
    existing = check_publish(services, actor, request)
    key = validate_idempotency_key(request.idempotency_key)
    if existing is not None and key is not None:
        earlier = services.repo.find_version_by_key(existing.id, key)
        if earlier is not None:  # a retry of a publish whose answer was lost
            return existing, earlier
    event = {"entry_point": f"{request.file}:{request.function}", **(detail or {})}
    if request.environment:
        event["environment"] = request.environment
    if request.git_commit:
        event["git_commit"] = request.git_commit
    with audited(services, actor, PUBLISH, model=existing, detail=event) as audit:
        model, version = publish(
            services,
            name=request.model,
            archive=archive,
            file=request.file,
            function=request.function,
            description=request.description,
            actor=actor,
            concurrency=request.concurrency,
            environment=request.environment,
            python=request.python,
            source=request.source,
            git_commit=request.git_commit,
            idempotency_key=key,
            example=request.example,
            batch_max_size=request.batch_max_size,
            batch_max_wait_ms=request.batch_max_wait_ms,
            fork=request.fork,
        )
        audit.model, audit.version = model, version.number
        if then is not None:
            then(version)
    return model, version


def publish(
    services: Services,
    *,
    name: str,
    archive: BinaryIO,
    file: str,
    function: str,
    description: str,
    actor: User,
    concurrency: int = 1,
    environment: str | None = None,
    python: str | None = None,
    source: str | None = None,
    git_commit: str | None = None,
    idempotency_key: str | None = None,
    example: str | None = None,
    batch_max_size: int | None = None,
    batch_max_wait_ms: float | None = None,
    fork: bool = True,
) -> tuple[Model, Version]:
    """Store the uploaded project and create the next version (status ``building``).

    ``environment`` is ``server``, ``isolated``, a named environment, or None for the default:
    isolated when the project declares dependencies, else server. ``python`` chooses the
    interpreter of an isolated environment (``3.11``, or a path). ``example`` is the
    version's example input; without one, the project's ``example.json`` if it has one.
    """
    settings = services.settings
    file, function = validate_entry_point(file, function)
    validate_concurrency(concurrency)
    validate_environment(environment)
    source = validate_source(source, git_commit)
    example = validate_example(example)
    batch_max_size, batch_max_wait_ms = validate_batching(batch_max_size, batch_max_wait_ms)
    runtime = runtime_for(file)
    if runtime == "r":
        describe(settings, runtime)  # fails clearly when R is missing
    if runtime == "r" and concurrency != 1:
        raise errors.BadRequest("R instances run one call at a time; publish with concurrency 1.")
    existing = services.repo.find_model(name)
    if existing is None:
        check_new_model(services, actor, name)
    else:
        name = existing.name  # published by id or by name
        if runtime == "r" and not existing.network:
            raise errors.BadRequest(
                f"'{name}' has its network turned off, and R versions need it: their worker "
                "talks to the server over loopback. Turn it on first (modelhost models update "
                f"{name} --network), or publish Python."
            )

    scratch = settings.home_path / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=scratch, prefix="publish-"))
    try:
        files, size = extract_archive(
            archive,
            staging,
            max_bytes=settings.max_bundle_bytes,
            max_files=settings.max_bundle_files,
        )
        if not (staging / file).is_file():
            top = sorted(p.name for p in staging.iterdir())[:20]
            raise errors.EntryPointNotFound(
                f"The file '{file}' is not in the project. Files at its top level: "
                f"{', '.join(top) or '(none)'}. Pass --file with a path relative to the "
                "project directory."
            )
        if example is None:
            example = _project_example(staging)
        columns, environment_line = _environment(
            services, requested=environment, python=python, runtime=runtime, tree=staging
        )
        bundle = services.store.put_tree(staging)
        model, _created = services.repo.get_or_create_model(
            name,
            owner_id=actor.id,
            description=description,
            instance_count=settings.default_instance_count,
            invocation_mode=settings.default_invocation_mode,
        )
        log = (
            f"Bundle sha256:{bundle.sha256} ({count_files(files)}, {human_size(size)})\n"
            f"Entry point: {file}:{function}\n"
            f"Environment: {environment_line}\n"
        )
        if source:
            log += f"Source: {source}" + (f" at commit {git_commit}\n" if git_commit else "\n")
        version = services.repo.create_version(
            model.id,
            bundle_sha256=bundle.sha256,
            bundle_bytes=size,
            bundle_files=files,
            file=file,
            function=function,
            build_log=log,
            description=description,
            author_id=actor.id,
            concurrency=concurrency,
            source=source,
            git_commit=git_commit,
            idempotency_key=idempotency_key,
            example=example,
            batch_max_size=batch_max_size,
            batch_max_wait_ms=batch_max_wait_ms,
            fork=fork,
            **columns,
        )
        workdir = services.children.instance_workdir(version.id)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        manifests.record(staging, manifests.manifest_path(workdir))
        staging.rename(workdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model, version
