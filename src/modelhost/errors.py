"""Every error modelhost raises, and the one JSON envelope they travel in.

The tree::

    ModelhostError                  500 internal_error
    ├── BadRequest                  400 bad_request
    │   ├── InvalidArguments        400 invalid_arguments
    │   ├── InvalidBundle           400 invalid_bundle
    │   ├── EntryPointNotFound      400 entry_point_not_found
    │   ├── InvalidSetting          400 invalid_setting
    │   ├── InvalidLimit            400 invalid_limit       (a token's rate or quota)
    │   └── EnvironmentFailed       400 environment_failed  (requirements or Python)
    ├── Unauthenticated             401 unauthenticated
    ├── Forbidden                   403 forbidden
    ├── NotFound                    404 not_found
    │   ├── ModelNotFound           404 model_not_found
    │   ├── VersionNotFound         404 version_not_found
    │   ├── RouteNotFound           404 route_not_found
    │   ├── EnvironmentNotFound     404 environment_not_found
    │   ├── RunNotFound             404 run_not_found
    │   └── ScheduleNotFound        404 schedule_not_found
    ├── MethodNotAllowed            405 method_not_allowed
    ├── Conflict                    409 conflict
    ├── TooManyRequests             429 too_many_requests
    │   ├── RateLimited             429 rate_limited        (a token over its rate)
    │   └── QuotaExceeded           429 quota_exceeded      (a token over its quota)
    ├── PayloadTooLarge             413 payload_too_large
    │   └── BundleTooLarge          413 bundle_too_large
    ├── HeadersTooLarge             431 headers_too_large
    ├── UnsupportedMediaType        415 unsupported_media_type
    ├── ModelError                  500 model_error         (the user's function raised)
    │   └── ResultNotSerializable   500 result_not_serializable
    ├── InstanceCrashed             502 instance_crashed
    ├── Unavailable                 503 unavailable
    │   ├── NoReadyInstance         503 no_ready_instance
    │   ├── QueueFull               503 queue_full
    │   └── InstanceLost            503 instance_lost
    ├── ModelTimeout                504 model_timeout
    ├── BuildFailed                 422 build_failed        (client side: a version failed)
    └── ConnectionFailed            (client side: the server could not be reached)

Domain code raises these and never imports a web framework; the API, the gateway and the
Python client all map between them and the envelope with :func:`error_body` and
:func:`error_from_body`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ModelhostError(Exception):
    """Base of every modelhost error; ``status`` and ``code`` say how it travels over HTTP."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    #: 5xx messages are replaced by a generic one before they reach a client, unless public.
    public: ClassVar[bool] = True
    #: seconds a client should wait before it tries again, for errors worth retrying (sent as
    #: ``Retry-After`` unless the raiser gives its own)
    retry_after: ClassVar[int | None] = None

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        if self.retry_after is not None:
            self.headers.setdefault("Retry-After", str(self.retry_after))


class BadRequest(ModelhostError):
    status = 400
    code = "bad_request"


class InvalidArguments(BadRequest):
    code = "invalid_arguments"


class InvalidBundle(BadRequest):
    code = "invalid_bundle"


class EntryPointNotFound(BadRequest):
    code = "entry_point_not_found"


class InvalidSetting(BadRequest):
    code = "invalid_setting"


class InvalidLimit(BadRequest):
    """A token's rate or quota that is not ``N/s``, ``N/min``, ``N/h`` or ``N/day``, ``N/month``."""

    code = "invalid_limit"


class EnvironmentFailed(BadRequest):
    """Requirements that cannot be resolved or installed, or a Python that is not there."""

    code = "environment_failed"


class Unauthenticated(ModelhostError):
    status = 401
    code = "unauthenticated"


class Forbidden(ModelhostError):
    status = 403
    code = "forbidden"


class NotFound(ModelhostError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class RouteNotFound(NotFound):
    code = "route_not_found"


class EnvironmentNotFound(NotFound):
    code = "environment_not_found"


class RunNotFound(NotFound):
    code = "run_not_found"


class ScheduleNotFound(NotFound):
    code = "schedule_not_found"


class MethodNotAllowed(ModelhostError):
    status = 405
    code = "method_not_allowed"


class Conflict(ModelhostError):
    status = 409
    code = "conflict"


class TooManyRequests(ModelhostError):
    status = 429
    code = "too_many_requests"


class RateLimited(TooManyRequests):
    """An access token called faster than its rate (``tokens create --rate``)."""

    code = "rate_limited"


class QuotaExceeded(TooManyRequests):
    """An access token used up its quota for the day or month (``tokens create --quota``)."""

    code = "quota_exceeded"


class PayloadTooLarge(ModelhostError):
    status = 413
    code = "payload_too_large"


class BundleTooLarge(PayloadTooLarge):
    code = "bundle_too_large"


class HeadersTooLarge(ModelhostError):
    """The request line and headers are over ``max_header_bytes``."""

    status = 431
    code = "headers_too_large"


class UnsupportedMediaType(ModelhostError):
    status = 415
    code = "unsupported_media_type"


class ModelError(ModelhostError):
    """The user's function raised; the message names the exception type and its text."""

    status = 500
    code = "model_error"


class ResultNotSerializable(ModelError):
    code = "result_not_serializable"


class InstanceCrashed(ModelhostError):
    """The instance died during the call: the same call may well succeed on its replacement."""

    status = 502
    code = "instance_crashed"
    retry_after = 1


class CallNotStarted(Exception):
    """Not an answer: the instance went away before this call began, so the gateway sends it
    to another instance. If none runs it, the caller gets :class:`InstanceCrashed`."""


class Unavailable(ModelhostError):
    status = 503
    code = "unavailable"
    retry_after = 1


class NoReadyInstance(Unavailable):
    code = "no_ready_instance"


class QueueFull(Unavailable):
    code = "queue_full"


class InstanceLost(Unavailable):
    """The connection to an instance on another machine (a Ray node) broke during the call and
    its node is gone or unreachable: whether the call ran is unknown; retry it."""

    code = "instance_lost"


class ModelTimeout(ModelhostError):
    status = 504
    code = "model_timeout"


class BuildFailed(ModelhostError):
    """A published version did not load; the message has the reason, ``build_log`` the rest."""

    status = 422
    code = "build_failed"

    def __init__(self, message: str, *, build_log: str = "", **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.build_log = build_log


class ConnectionFailed(ModelhostError):
    """Raised by the client when the server cannot be reached at all."""

    status = 0
    code = "connection_failed"


class InternalError(ModelhostError):
    """An unexpected failure; its message never reaches a client."""

    public = False


def _all_subclasses(cls: type[ModelhostError]) -> list[type[ModelhostError]]:
    found: list[type[ModelhostError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


#: Every error class by its stable code, used to turn an envelope back into an exception.
_ALL_ERRORS: list[type[ModelhostError]] = [ModelhostError, *_all_subclasses(ModelhostError)]
ERRORS_BY_CODE: dict[str, type[ModelhostError]] = {
    cls.code: cls for cls in _ALL_ERRORS if cls is not InternalError
}

GENERIC_SERVER_ERROR = "Internal server error. The server log has the details for this request id."


def error_body(error: ModelhostError, request_id: str) -> dict[str, Any]:
    """The one JSON error envelope: ``{"error": {"code", "message"}, "request_id"}``."""
    message = error.message if error.public else GENERIC_SERVER_ERROR
    return {"error": {"code": error.code, "message": message}, "request_id": request_id}


def error_from_body(status: int, body: Any) -> ModelhostError:
    """Rebuild the exception a server sent; unknown shapes become a generic error."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", ""))
        message = str(body["error"].get("message", ""))
        cls = ERRORS_BY_CODE.get(code)
        if cls is None:
            cls = next((c for c in ERRORS_BY_CODE.values() if c.status == status), ModelhostError)
        error = cls(message)
        error.request_id = body.get("request_id")  # type: ignore[attr-defined]
        return error
    return ModelhostError(f"The server answered HTTP {status} without an error body.")
