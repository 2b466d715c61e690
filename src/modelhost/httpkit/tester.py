"""The tester's call over HTTP, shared by the API (``POST /api/v1/models/{m}/test``) and the
UI (``POST /ui/models/{m}/test``, through the session)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from modelhost import errors
from modelhost.db.repo import User
from modelhost.gateway.app import new_request_id
from modelhost.httpkit.bodies import allow_body
from modelhost.httpkit.responses import JSONResponse
from modelhost.operations import Services, tester


async def tester_call(
    request: Request,
    services: Services,
    user: User,
    model: str,
    route: str,
    run_async: bool,
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
    if run_async:
        request_id = getattr(request.state, "request_id", None) or new_request_id()
        accepted = await tester.submit(services, user, model, route, body, request_id)
        return JSONResponse(accepted, status_code=202, headers={"Location": accepted["location"]})
    answer = await tester.call(services, user, model, route, body)
    return Response(answer.body, status_code=answer.status, media_type="application/json")
