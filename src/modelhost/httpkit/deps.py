"""Request-scoped helpers shared by the API modules: services and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelhost.db.repo import User
from modelhost.operations import Services
from modelhost.operations.credentials import authenticate

_bearer = HTTPBearer(auto_error=False, description="An API key: mh_...")


def get_services(request: Request) -> Services:
    return request.app.state.services


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    services = get_services(request)
    return authenticate(services.repo, credentials.credentials if credentials else None)


ServicesDep = Annotated[Services, Depends(get_services)]
UserDep = Annotated[User, Depends(current_user)]
