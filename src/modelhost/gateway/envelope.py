"""The envelopes of an invocation's answer. The success envelope is built from bytes
(DESIGN.md, "Invocation contract")::

    {"result": 5, "request_id": "HVOXQ5CEZRFIS0MD", "timing": 3.81, "model_time_in_ms": 3,
     "release": {"harness_version": "...", "model_id": "...", "model_version": "...",
                 "model_version_number": 2}}

with the headers ``Content-Type``, ``Content-Length``, ``X-Request-Id`` and ``X-Model-Version``.
The instance's result is already JSON: it goes in as it came, never parsed again, and the
``release`` object is encoded once per version (:func:`release_json`), when the route table is
built. What is left per call is one join of a few byte strings.

A failure gets the one error envelope, ``{"error": {"code", "message"}, "request_id"}``
(:func:`error_response`), on the invocation routes and on every raw-ASGI door (host and body
limits, the UI's guard, gateway processes' passes).
"""

from __future__ import annotations

import orjson

from modelhost import __version__, errors
from modelhost.gateway.routes import Release


def release_json(model_id: str, version_id: str, number: int) -> bytes:
    """The ``release`` object of every answer of one version."""
    return orjson.dumps(
        {
            "harness_version": __version__,
            "model_id": model_id,
            "model_version": version_id,
            "model_version_number": number,
        }
    )


def success(
    result_json: bytes,
    request_id: str,
    timing_ms: float,
    model_time_ms: float,
    release: Release,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of a 200: ``timing`` is the gateway's milliseconds from request to
    answer (two decimals), ``model_time_in_ms`` the function call's (whole milliseconds)."""
    request = request_id.encode()
    body = _SUCCESS % (result_json, request, timing_ms, round(model_time_ms), release.json)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", request),
        (b"x-model-version", release.number_header),
    ]
    return body, headers


#: the success envelope, its fields in the order of DESIGN.md's invocation contract
_SUCCESS = b'{"result":%s,"request_id":"%s","timing":%.2f,"model_time_in_ms":%d,"release":%s}'


def error_response(
    error: errors.ModelhostError, request_id: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and body of ``error``'s answer: the error envelope, its request
    id also in ``X-Request-Id``, and the error's own headers (``Retry-After``, say)."""
    body = orjson.dumps(errors.error_body(error, request_id))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    return error.status, headers, body
