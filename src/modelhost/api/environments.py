"""``/api/v1/environments``: named environments, and pruning the environment cache."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import Field

from modelhost import errors
from modelhost.api.request_body import RequestBody
from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations import environments as ops
from modelhost.permissions import ensure_environment_permission

router = APIRouter(prefix="/environments", tags=["environments"])


class NewEnvironment(RequestBody):
    name: str = Field(description="URL-safe name, such as sklearn-1.5")
    requirements: str | None = Field(
        default=None, description="The text of a requirements.txt file (a Python environment)"
    )
    python: str | None = Field(default=None, description="Python version, e.g. 3.11")
    r_library: str | None = Field(
        default=None,
        description="An R environment instead: the absolute path on the server of a library "
        "directory of installed R packages, which R versions then see with base R only",
    )


@router.get("", summary="List named environments (their newest revisions)")
def list_environments(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    ensure_environment_permission(user, "view-environments")
    return {"environments": ops.list_latest(services)}


@router.post(
    "",
    status_code=201,
    summary="Create a named environment, or its next revision",
    description=(
        "Resolves the requirements into a lock with hashes. The same requirements and Python "
        "as the newest revision change nothing (200); anything else is a new revision (201). "
        "With r_library instead of requirements, registers an R library directory."
    ),
)
def create_environment(
    body: NewEnvironment, response: Response, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
    if (body.requirements is None) == (body.r_library is None):
        raise errors.BadRequest(
            "Give exactly one of 'requirements' (a Python environment) or 'r_library' (an R "
            "library directory on the server)."
        )
    if body.r_library is not None:
        if body.python:
            raise errors.BadRequest("'python' is for Python environments; leave it out.")
        env, created = ops.create_r(services, user, name=body.name, r_library=body.r_library)
    else:
        assert body.requirements is not None
        env, created = ops.create(
            services, user, name=body.name, requirements=body.requirements, python=body.python
        )
    if not created:
        response.status_code = 200
    return {**ops.view(services, env, detail=True), "created": created}


@router.get("/{name}", summary="Show a named environment with its lock and revisions")
def show_environment(
    name: str,
    services: ServicesDep,
    user: UserDep,
    revision: Annotated[int | None, Query(description="This revision; default newest")] = None,
) -> dict[str, Any]:
    ensure_environment_permission(user, "view-environments")
    return ops.view(services, ops.get(services, name, revision), detail=True)


@router.post("/prune", summary="Delete cached environments that no version uses")
def prune_environments(services: ServicesDep, user: UserDep) -> dict[str, Any]:
    return ops.prune(services, user)
