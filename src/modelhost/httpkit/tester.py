"""The tester's call over HTTP, shared by the API (``POST /api/v1/models/{m}/test``) and the
UI (``POST /ui/models/{m}/test``, through the session)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from modelhost import errors
from modelhost.db.repo import User
from modelhost.httpkit.bodies import allow_body
from modelhost.operations import Services, tester


async def tester_call(
    request: Request, services: Services, user: User, model: str, route: str
) -> Response:
    """The tester's call, for the API and the UI: the request body is the model's request
    body, and the answer is the model's answer (status and body) as a caller would get it."""
    limit = services.settings.max_request_bytes
    allow_body(
        request,
        limit,
        errors.PayloadTooLarge(
            f"The request body is over the limit of {limit} bytes (setting max_request_bytes)."
        ),
    )
    body = await request.body()
    answer = await tester.call(services, user, model, route, body)
    return Response(answer.body, status_code=answer.status, media_type="application/json")
