"""The success envelope, against DESIGN.md's invocation contract and docs/api.md."""

from __future__ import annotations

import json
import re

import pytest

from modelhost import __version__
from modelhost.gateway.envelope import release_json, success
from modelhost.gateway.routes import Release

#: DESIGN.md, "Invocation contract": the keys of a 200's body, in this order
KEYS = ["result", "request_id", "timing", "model_time_in_ms", "release"]


def _release(number: int = 2) -> Release:
    return Release("m-1", "v-9", number, release_json("m-1", "v-9", number))


def test_the_release_object_names_the_harness_the_model_and_the_version() -> None:
    assert json.loads(release_json("m-1", "v-9", 12)) == {
        "harness_version": __version__,
        "model_id": "m-1",
        "model_version": "v-9",
        "model_version_number": 12,
    }


def test_a_success_body_is_the_documented_envelope_with_the_result_as_given() -> None:
    body, _ = success(
        b'{"y": [1, 2.5, null, "\\u00e9"]}', "HVOXQ5CEZRFIS0MD", 3.8149, 3.4, _release()
    )
    answer = json.loads(body)
    assert list(answer) == KEYS
    assert answer == {
        "result": {"y": [1, 2.5, None, "é"]},
        "request_id": "HVOXQ5CEZRFIS0MD",
        "timing": 3.81,
        "model_time_in_ms": 3,
        "release": {
            "harness_version": __version__,
            "model_id": "m-1",
            "model_version": "v-9",
            "model_version_number": 2,
        },
    }


def test_the_result_bytes_go_in_unparsed() -> None:
    # a number JSON holds but a float would not: it must reach the client digit for digit
    body, _ = success(b"12345678901234567890.000000000001", "R" * 16, 1, 1, _release())
    assert body.startswith(b'{"result":12345678901234567890.000000000001,"request_id":')
    assert json.loads(body)["request_id"] == "R" * 16


@pytest.mark.parametrize(
    ("timing", "shown"), [(0.0, "0.00"), (3.814, "3.81"), (3.816, "3.82"), (1234.5, "1234.50")]
)
def test_timing_is_in_milliseconds_with_two_decimals(timing: float, shown: str) -> None:
    body, _ = success(b"5", "R" * 16, timing, 0, _release())
    assert re.search(rb'"timing":([0-9.]+),', body).group(1).decode() == shown  # type: ignore[union-attr]


@pytest.mark.parametrize(("model_time", "shown"), [(0.2, 0), (3.4, 3), (3.6, 4), (120.0, 120)])
def test_model_time_is_in_whole_milliseconds(model_time: float, shown: int) -> None:
    body, _ = success(b"5", "R" * 16, 1, model_time, _release())
    value = json.loads(body)["model_time_in_ms"]
    assert value == shown
    assert isinstance(value, int)


def test_the_headers_say_json_the_length_the_request_id_and_the_version_number() -> None:
    body, headers = success(b'"ok"', "HVOXQ5CEZRFIS0MD", 2, 1, _release(number=17))
    assert headers == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", b"HVOXQ5CEZRFIS0MD"),
        (b"x-model-version", b"17"),
    ]


def test_the_release_is_the_one_encoded_for_the_version() -> None:
    release = Release("m-2", "v-3", 4, b'{"given":"as is"}')
    body, _ = success(b"null", "R" * 16, 1, 1, release)
    answer = json.loads(body)
    assert answer["release"] == {"given": "as is"}
    assert answer["result"] is None


# -- the error envelope (DESIGN.md, "Errors"; docs/api.md's tables) ---------------------------


def test_an_error_is_the_one_envelope_with_its_status_and_the_request_id_twice() -> None:
    from modelhost import errors
    from modelhost.gateway.envelope import error_response

    error = errors.NotFound("There is no model 'nope'.")
    status, headers, body = error_response(error, "HVOXQ5CEZRFIS0MD")
    assert status == 404
    assert json.loads(body) == {
        "error": {"code": error.code, "message": "There is no model 'nope'."},
        "request_id": "HVOXQ5CEZRFIS0MD",
    }
    assert dict(headers) == {
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
        b"x-request-id": b"HVOXQ5CEZRFIS0MD",
    }


def test_an_errors_own_headers_go_out_in_lower_case_after_the_envelopes() -> None:
    from modelhost import errors
    from modelhost.gateway.envelope import error_response

    error = errors.MethodNotAllowed("Use POST.", headers={"Allow": "POST", "Retry-After": "5"})
    status, headers, _ = error_response(error, "R")
    assert status == 405
    assert [name for name, _ in headers] == [
        b"content-type",
        b"content-length",
        b"x-request-id",
        b"allow",
        b"retry-after",
    ]
    assert (b"allow", b"POST") in headers
    assert (b"retry-after", b"5") in headers


def test_an_unexpected_failure_says_only_that_the_log_has_the_details() -> None:
    from modelhost import errors
    from modelhost.gateway.envelope import error_response

    status, _, body = error_response(errors.InternalError("secret internals"), "R")
    assert status == 500
    answer = json.loads(body)
    assert answer["error"]["code"] == "internal_error"
    assert "secret" not in answer["error"]["message"]
    assert "log" in answer["error"]["message"]
