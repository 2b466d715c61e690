"""The tester: a user who may view a model calls it through their session or API key.

The hosted product's tester needs no access token for a signed-in user; here anyone with the
``test`` permission (viewer and up, or anyone signed in on a public model) may call any of the
model's routes without one. The call goes through the gateway in process
(:meth:`modelhost.gateway.app.Gateway.call_in_process`), so it is answered exactly as a caller
over HTTP would be, and each one is recorded in the audit log as a ``test-call``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from modelhost import errors, urls
from modelhost.db.repo import Model, User
from modelhost.events import TEST_CALL
from modelhost.operations import Services, predictions
from modelhost.operations.access_control import authorize_action
from modelhost.operations.audit import record

_ROUTE = re.compile(
    r"^(latest|labels/([A-Za-z0-9][A-Za-z0-9._-]{0,63})|versions/([1-9][0-9]{0,8}))$"
)


@dataclass(frozen=True)
class TesterAnswer:
    """What the model answered: the HTTP status and the body a caller would have got."""

    status: int
    body: bytes


def invocation_path(model: Model, route: str) -> str:
    """The invocation URL path of ``route`` (``latest``, ``labels/prod``, ``versions/3``)."""
    match = _ROUTE.match(route)
    if match is None:
        raise errors.BadRequest(
            f"'{route}' is not a route of a model; use latest, labels/NAME (such as "
            "labels/prod) or versions/N (such as versions/2)."
        )
    if match.group(2):
        return urls.invoke_label(model.name, match.group(2))
    if match.group(3):
        return urls.invoke_version(model.name, int(match.group(3)))
    return urls.invoke_latest(model.name)


async def call(services: Services, actor: User, key: str, route: str, body: bytes) -> TesterAnswer:
    """Call the model ``key`` on ``route`` with ``body`` as ``actor``, without a token."""
    model = await asyncio.to_thread(authorize_action, services, actor, key, TEST_CALL)
    path = invocation_path(model, route)
    status, answer = await services.invoke(path, body)
    detail: dict[str, Any] = {"route": route, "status": status}
    try:
        parsed = json.loads(answer)
        detail["request_id"] = parsed.get("request_id")
        version = (parsed.get("release") or {}).get("model_version_number")
    except (ValueError, AttributeError):
        version = None
    await asyncio.to_thread(
        record,
        services,
        actor,
        TEST_CALL,
        model=model,
        version=version,
        outcome="success" if status < 400 else "failed",
        detail=detail,
    )
    return TesterAnswer(status, answer)


async def submit(
    services: Services, actor: User, key: str, route: str, body: bytes, request_id: str
) -> dict[str, Any]:
    """Submit an asynchronous prediction of the model ``key`` on ``route`` as ``actor``,
    without a token (the tester's "Run asynchronously"): what the submit answers (202)."""
    model = await asyncio.to_thread(authorize_action, services, actor, key, TEST_CALL)
    invocation_path(model, route)  # a route of a model, or 400
    checked = predictions.check_body(body)
    prediction = await predictions.submit(
        services, model.id, route, checked, request_id, predictions.Submitter(user_id=actor.id)
    )
    services.wake_predictions()
    await asyncio.to_thread(
        record,
        services,
        actor,
        TEST_CALL,
        model=model,
        outcome="success",
        detail={"route": route, "async": True, "prediction": prediction.id},
    )
    return predictions.accepted(model.name, prediction)
