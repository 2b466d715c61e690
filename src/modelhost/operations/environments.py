"""Named environments: requirements locked once, shared by any model, revised on change.

``envs create NAME --requirements FILE`` resolves the requirements into a lock at once (so a
requirement that cannot be resolved is refused there, with uv's reason) and stores it as the
next revision of NAME; the same requirements and Python again change nothing. A version
published with ``--environment NAME`` copies the newest revision's lock, so later revisions
never change it. The environment itself is built, and cached, when a version first needs it.

``envs create NAME --r-library DIR`` registers an R library instead (:mod:`.rlibraries`): a
directory of packages an admin prepared. An R version published with ``--environment NAME``
records the directory, and its instances see that library and base R only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost import errors
from modelhost.builder import environments, rlibraries, uvenv
from modelhost.builder.builds import settings_tmp
from modelhost.db.repo import NamedEnvironment, User, new_id
from modelhost.events import ENVIRONMENT_CREATE, ENVIRONMENTS_PRUNE
from modelhost.names import NAME_PATTERN
from modelhost.operations import Services, iso
from modelhost.operations.audit import audited, record
from modelhost.permissions import ensure_environment_permission

MAX_REQUIREMENTS_BYTES = 1 << 20


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name) or name in environments.RESERVED:
        raise errors.BadRequest(
            f"'{name}' is not a valid environment name: use 1 to 63 lowercase letters, digits, "
            "'-', '_' or '.', starting with a letter or digit, other than "
            f"{', '.join(environments.RESERVED)} (for example sklearn-1.5)."
        )
    return name


def get(services: Services, name: str, revision: int | None = None) -> NamedEnvironment:
    found = services.repo.get_environment(name, revision)
    if found is None:
        which = f"'{name}'" if revision is None else f"'{name}' revision {revision}"
        raise errors.EnvironmentNotFound(
            f"There is no environment {which}. 'modelhost envs list' shows the environments."
        )
    return found


def create(
    services: Services, user: User, *, name: str, requirements: str, python: str | None = None
) -> tuple[NamedEnvironment, bool]:
    """Lock ``requirements`` as the next revision of ``name``; (revision, whether it is new)."""
    ensure_environment_permission(user, "create-environment")
    validate_name(name)
    if len(requirements.encode()) > MAX_REQUIREMENTS_BYTES:
        raise errors.BadRequest("The requirements are over 1 MB; is that the right file?")
    revisions = services.repo.list_environments(name)
    if revisions:
        ensure_environment_permission(user, "revise-environment", name, revisions[0].created_by)
    settings = services.settings
    latest = revisions[-1] if revisions else None
    if latest is not None and latest.kind == environments.R:
        raise errors.Conflict(
            f"'{name}' is an R environment (a library directory); give its next revision with "
            f"--r-library DIR, or choose another name for a Python environment."
        )
    if python or latest is None:
        chosen = uvenv.find_python(settings, python)
    else:
        chosen = uvenv.Python(latest.interpreter, latest.python_version)
    if (
        latest is not None
        and latest.requirements == requirements
        and latest.python_version == chosen.version
    ):
        return latest, False
    scratch = settings_tmp(settings) / f"requirements-{new_id()}.txt"
    scratch.write_text(requirements)
    try:  # outside the audit's transaction: resolving takes seconds and needs the network
        lock = uvenv.compile_lock(
            settings,
            scratch,
            chosen,
            deadline=uvenv.Deadline.after(settings),
            log=lambda _line: None,
            cwd=scratch.parent,
        )
    except errors.ModelhostError as exc:
        detail = {"name": name, "error": exc.message}
        record(services, user, ENVIRONMENT_CREATE, outcome="failed", detail=detail)
        raise
    finally:
        scratch.unlink(missing_ok=True)
    with audited(services, user, ENVIRONMENT_CREATE, detail={"name": name}) as audit:
        created = services.repo.add_environment_revision(
            name,
            requirements=requirements,
            lock=lock,
            interpreter=chosen.path,
            python_version=chosen.version,
            created_by=user.id,
        )
        audit.detail["revision"] = created.revision
    return created, True


def create_r(
    services: Services, user: User, *, name: str, r_library: str
) -> tuple[NamedEnvironment, bool]:
    """Register the R library directory ``r_library`` as the next revision of ``name``;
    (revision, whether it is new). The same directory again changes nothing."""
    ensure_environment_permission(user, "create-environment")
    validate_name(name)
    revisions = services.repo.list_environments(name)
    if revisions:
        ensure_environment_permission(user, "revise-environment", name, revisions[0].created_by)
    latest = revisions[-1] if revisions else None
    if latest is not None and latest.kind != environments.R:
        raise errors.Conflict(
            f"'{name}' is a Python environment; give its next revision with --requirements "
            "FILE, or choose another name for the R library."
        )
    rscript = environments.interpreter(services.settings, environments.R)  # R is installed
    try:
        library = rlibraries.check_library(r_library, services.settings.home_path)
    except errors.ModelhostError as exc:
        detail = {"name": name, "kind": "r", "error": exc.message}
        record(services, user, ENVIRONMENT_CREATE, outcome="failed", detail=detail)
        raise
    if latest is not None and latest.r_library == str(library):
        return latest, False
    detail = {"name": name, "kind": "r", "r_library": str(library)}
    with audited(services, user, ENVIRONMENT_CREATE, detail=detail) as audit:
        created = services.repo.add_environment_revision(
            name,
            requirements="",
            lock="",
            interpreter=rscript,
            python_version="",
            created_by=user.id,
            kind=environments.R,
            r_library=str(library),
        )
        audit.detail["revision"] = created.revision
    return created, True


def view(services: Services, env: NamedEnvironment, *, detail: bool = False) -> dict[str, Any]:
    if env.kind == environments.R:
        return _r_view(services, env, detail=detail)
    names = services.repo.usernames([env.created_by])
    python = uvenv.Python(env.interpreter, env.python_version)
    key = uvenv.environment_key(env.lock, python)
    shown: dict[str, Any] = {
        "name": env.name,
        "kind": env.kind,
        "revision": env.revision,
        "python_version": env.python_version,
        "interpreter": env.interpreter,
        "packages": uvenv.pins(env.lock),
        "environment_hash": key,
        "built": uvenv.environment_python(services.settings, key) is not None,
        "created_by": names.get(env.created_by, env.created_by),
        "created_at": iso(env.created_at),
    }
    if detail:
        shown["requirements"] = env.requirements
        shown["lock"] = env.lock
        shown["revisions"] = [
            {"revision": r.revision, "created_at": iso(r.created_at)}
            for r in services.repo.list_environments(env.name)
        ]
    return shown


def _r_view(services: Services, env: NamedEnvironment, *, detail: bool) -> dict[str, Any]:
    """An R environment: its library and the packages installed in it now."""
    names = services.repo.usernames([env.created_by])
    library = Path(env.r_library or "")
    shown: dict[str, Any] = {
        "name": env.name,
        "kind": env.kind,
        "revision": env.revision,
        "r_library": env.r_library,
        "interpreter": env.interpreter,
        "python_version": None,
        # what is installed there now: the admin may add packages in place
        "packages": rlibraries.packages(library),
        "environment_hash": None,
        # whether the directory is there (instances need it)
        "built": library.is_dir(),
        "created_by": names.get(env.created_by, env.created_by),
        "created_at": iso(env.created_at),
    }
    if detail:
        shown["revisions"] = [
            {"revision": r.revision, "created_at": iso(r.created_at), "r_library": r.r_library}
            for r in services.repo.list_environments(env.name)
        ]
    return shown


def list_latest(services: Services) -> list[dict[str, Any]]:
    """The newest revision of every named environment."""
    latest: dict[str, NamedEnvironment] = {}
    for env in services.repo.list_environments():
        latest[env.name] = env
    return [view(services, env) for env in latest.values()]


def prune(services: Services, actor: User) -> dict[str, Any]:
    """Delete the cached environments no version uses (admins); a version that needs one
    again rebuilds it from its stored lock."""
    ensure_environment_permission(actor, "prune-environments")
    with audited(services, actor, ENVIRONMENTS_PRUNE) as audit:
        removed = uvenv.prune(services.settings, services.repo.environment_hashes_in_use())
        audit.detail["removed"] = len(removed)
    return {
        "removed": [{"environment_hash": key, "bytes": size} for key, size in removed],
        "freed_bytes": sum(size for _, size in removed),
    }
