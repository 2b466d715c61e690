"""``/api/v1/environments``: named environments, and pruning the environment cache."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from modelhost.httpkit.deps import ServicesDep, UserDep
from modelhost.operations import environments as ops
from modelhost.permissions import ensure_environment_permission

router = APIRouter(prefix="/environments", tags=["environments"])


class NewEnvironment(BaseModel):
    name: str = Field(description="URL-safe name, such as sklearn-1.5")
    requirements: str = Field(description="The text of a requirements.txt file")
    python: str | None = Field(default=None, description="Python version, e.g. 3.11")


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
        "as the newest revision change nothing (200); anything else is a new revision (201)."
    ),
)
def create_environment(
    body: NewEnvironment, response: Response, services: ServicesDep, user: UserDep
) -> dict[str, Any]:
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
