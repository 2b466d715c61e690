"""Publish: an uploaded project archive becomes the next version of a model.

Validate the entry point, extract the archive with checks, store the bundle by its sha256,
then create the version row (status ``building``) and wake the reconciler, whose first instance
of the version is the import check. Nothing is recorded until the bundle is safely stored.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from modelhost import errors
from modelhost.builder.bundles import extract_archive, human_size
from modelhost.builder.environments import describe, runtime_for
from modelhost.db.repo import Model, User, Version
from modelhost.operations import Services

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
R_NAME = re.compile(r"^[A-Za-z.][A-Za-z0-9._]*$")
_ID_LIKE = re.compile(r"^[0-9a-f]{24}$")


def validate_model_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or _ID_LIKE.match(name):
        raise errors.BadRequest(
            f"'{name}' is not a valid model name: use 1 to 63 lowercase letters, digits, '-', "
            "'_' or '.', starting with a letter or digit (for example wine-quality)."
        )
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


MAX_CONCURRENCY = 64


def validate_concurrency(concurrency: int) -> int:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise errors.BadRequest(
            f"concurrency is the number of calls one instance runs at once: 1 to "
            f"{MAX_CONCURRENCY} (use more than 1 only if the function is thread-safe)."
        )
    return concurrency


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
) -> tuple[Model, Version]:
    """Store the uploaded project and create the next version (status ``building``)."""
    settings = services.settings
    file, function = validate_entry_point(file, function)
    validate_concurrency(concurrency)
    runtime = runtime_for(file)
    environment_line = describe(settings, runtime)  # fails clearly when R is missing
    if runtime == "r" and concurrency != 1:
        raise errors.BadRequest("R instances run one call at a time; publish with concurrency 1.")
    existing = services.repo.find_model(name)
    if existing is None:
        validate_model_name(name)
    else:
        name = existing.name  # published by id or by name

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
        bundle = services.store.put_tree(staging)
        model, _created = services.repo.get_or_create_model(
            name,
            owner_id=actor.id,
            description=description,
            instance_count=settings.default_instance_count,
            invocation_mode=settings.default_invocation_mode,
        )
        log = (
            f"Bundle sha256:{bundle.sha256} ({files} files, {human_size(size)})\n"
            f"Entry point: {file}:{function}\n"
            f"Environment: {environment_line}\n"
        )
        version = services.repo.create_version(
            model.id,
            bundle_sha256=bundle.sha256,
            bundle_bytes=size,
            bundle_files=files,
            file=file,
            function=function,
            environment="r" if runtime == "r" else "server",
            build_log=log,
            description=description,
            author_id=actor.id,
            concurrency=concurrency,
        )
        workdir = services.reconciler.workdir(version)
        workdir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(workdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model, version
