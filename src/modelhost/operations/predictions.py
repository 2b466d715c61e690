"""Asynchronous predictions: submit one, read one, and a model's webhook.

A prediction is checked (a JSON object with ``data`` or ``parameters``) and stored in the
database, ``queued``, before its submit is answered; the main server process's queue
(:mod:`modelhost.serving.predictions`) runs it once. Who may read it: the access token it was
submitted with, a user who may test the model (viewer and up), or, on a public model, whoever
has the id of a prediction submitted without a token. Anyone else gets 404, as for an id that
does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from modelhost import errors, urls
from modelhost.db.predictions import FAILED, RUNNING, SUCCEEDED, AsyncPrediction
from modelhost.db.repo import User
from modelhost.events import SETTINGS_CHANGE
from modelhost.operations import Services
from modelhost.operations.access_control import authorize, authorize_action
from modelhost.operations.audit import audited
from modelhost.operations.credentials import authenticate

_BODY_SHAPE = "Request body must be a JSON object with a 'data' object or a 'parameters' array."
#: the header a webhook's body is signed in
SIGNATURE_HEADER = "X-Modelhost-Signature"


@dataclass(frozen=True)
class Submitter:
    """Who submitted a prediction: the sha256 of the access token, or a user, or neither (a
    call without a token to a public model)."""

    token_sha256: str | None = None
    user_id: str | None = None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_body(body: bytes, *, hosted: bool = False) -> bytes:
    """The body to send the instance, if ``body`` is a call's body; else 400.

    ``hosted`` (the hosted product's async path): ``{"parameters": {...}}`` passes keyword
    arguments, as ``{"data": {...}}`` does here, and ``{"parameters": [...]}`` positional ones.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.BadRequest(f"The body is not JSON. {_BODY_SHAPE}") from None
    if not isinstance(parsed, dict):
        raise errors.BadRequest(_BODY_SHAPE)
    if hosted and set(parsed) == {"parameters"} and isinstance(parsed["parameters"], dict):
        return orjson.dumps({"data": parsed["parameters"]})
    has_data, has_parameters = "data" in parsed, "parameters" in parsed
    if has_data == has_parameters:
        raise errors.BadRequest(
            f"{_BODY_SHAPE} It has {'both' if has_data else 'neither'}; send exactly one."
        )
    if has_data and not isinstance(parsed["data"], dict):
        raise errors.BadRequest("'data' must be a JSON object of keyword arguments.")
    if has_parameters and not isinstance(parsed["parameters"], (list, dict) if hosted else list):
        raise errors.BadRequest("'parameters' must be a JSON array of positional arguments.")
    return body


async def submit(
    services: Services, model_id: str, route: str, body: bytes, request_id: str, who: Submitter
) -> AsyncPrediction:
    """Store a checked prediction, queued; committed when this returns."""
    return await asyncio.to_thread(
        services.repo.add_prediction,
        model_id=model_id,
        route=route,
        body=body.decode(),
        request_id=request_id,
        token_sha256=who.token_sha256,
        user_id=who.user_id,
    )


def location(model: str, prediction_id: str) -> str:
    return urls.invoke_prediction(model, prediction_id)


def accepted(model: str, prediction: AsyncPrediction) -> dict[str, Any]:
    """What a submit answers (202)."""
    return {
        "asyncPredictionId": prediction.id,
        "status": prediction.status,
        "location": location(model, prediction.id),
    }


def view(prediction: AsyncPrediction) -> dict[str, Any]:
    """What reading a prediction answers: its status, then the synchronous envelope's result
    and release (``succeeded``) or the error envelope's object (``failed``)."""
    answer: dict[str, Any] = {
        "asyncPredictionId": prediction.id,
        "status": prediction.status,
        "request_id": prediction.request_id,
        "created_at": _iso(prediction.created_at),
        "started_at": _iso(prediction.started_at),
        "finished_at": _iso(prediction.finished_at),
    }
    if prediction.status == SUCCEEDED and prediction.outcome is not None:
        answer.update(json.loads(prediction.outcome))
    elif prediction.status == FAILED and prediction.error is not None:
        answer["error"] = json.loads(prediction.error)
        answer["http_status"] = prediction.http_status
    return answer


def hosted_view(prediction: AsyncPrediction) -> dict[str, Any]:
    """The hosted product's shape: ``status`` is queued until the prediction ends (a running
    one is still pending to its clients), then ``result`` or ``errors`` (a list of messages)."""
    status = "queued" if prediction.status == RUNNING else prediction.status
    answer: dict[str, Any] = {"asyncPredictionId": prediction.id, "status": status}
    if prediction.status == SUCCEEDED and prediction.outcome is not None:
        outcome = json.loads(prediction.outcome)
        answer["result"] = outcome["result"]
        answer["release"] = outcome["release"]
    elif prediction.status == FAILED and prediction.error is not None:
        answer["errors"] = [json.loads(prediction.error)["message"]]
    return answer


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _not_found(model: str, prediction_id: str) -> errors.NotFound:
    return errors.NotFound(
        f"Model '{model}' has no prediction '{prediction_id}' that this credential may read: "
        "read it with the access token it was submitted with (or an API key of a user who may "
        "use the model); or it was deleted after the retention period (setting "
        "async_retention_hours)."
    )


def find_readable(
    services: Services,
    *,
    model_id: str,
    model_name: str,
    public: bool,
    token_digests: tuple[bytes, ...],
    prediction_id: str,
    credential: str | None,
) -> AsyncPrediction:
    """The prediction, if the caller with ``credential`` (an access token, an API key or
    none) may read it; else 404, whether it exists or not."""
    prediction = services.repo.get_prediction(prediction_id)
    if prediction is None or prediction.model_id != model_id:
        raise _not_found(model_name, prediction_id)
    if credential is None:
        if public and prediction.token_sha256 is None and prediction.user_id is None:
            return prediction
        raise _not_found(model_name, prediction_id)
    digest = token_digest(credential)
    same_token = prediction.token_sha256 is not None and hmac.compare_digest(
        digest, prediction.token_sha256
    )
    if same_token and (public or bytes.fromhex(digest) in token_digests):
        return prediction
    if credential.startswith("mh_"):
        try:
            user = authenticate(services.repo, credential)
            authorize(services, user, model_id, "test")
        except (errors.Unauthenticated, errors.Forbidden, errors.NotFound):
            raise _not_found(model_name, prediction_id) from None
        return prediction
    raise _not_found(model_name, prediction_id)


def find_for_user(services: Services, user: User, key: str, prediction_id: str) -> AsyncPrediction:
    """A prediction of the model ``key``, for a user who may test it (the UI's tester)."""
    model = authorize(services, user, key, "test")
    prediction = services.repo.get_prediction(prediction_id)
    if prediction is None or prediction.model_id != model.id:
        raise _not_found(model.name, prediction_id)
    return prediction


# ---------------------------------------------------------------------- webhooks


def check_webhook_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # such as an unclosed [ of an IPv6 address
        host = None
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not host:
        raise errors.BadRequest(
            f"'{url}' is not a webhook URL; give an http:// or https:// URL, such as "
            "https://example.com/hooks/modelhost."
        )
    if parts.username or parts.password:
        raise errors.BadRequest(
            "A webhook URL may not carry a user name or password; the calls are signed with "
            f"HMAC-SHA256 instead (header {SIGNATURE_HEADER})."
        )
    return url


def set_webhook(services: Services, actor: User, key: str, url: str | None) -> dict[str, Any]:
    """Set (or with ``url`` None, remove) the model's webhook; a new signing secret is made
    each time one is set, and returned once."""
    model = authorize_action(services, actor, key, SETTINGS_CHANGE)
    if url is None:
        with audited(services, actor, SETTINGS_CHANGE, model=model, detail={"webhook": None}):
            services.repo.set_webhook(model.id, None, None)
        return {"url": None}
    check_webhook_url(url)
    secret = "mhw_" + secrets.token_urlsafe(32)
    detail = {"webhook": url}
    with audited(services, actor, SETTINGS_CHANGE, model=model, detail=detail):
        services.repo.set_webhook(model.id, url, services.key.encrypt(secret))
    return {"url": url, "secret": secret, "header": SIGNATURE_HEADER}


def get_webhook(services: Services, actor: User, key: str) -> dict[str, Any]:
    model = authorize(services, actor, key, "view-config")
    hook = services.repo.get_webhook(model.id)
    return {"url": hook.url if hook else None}


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
