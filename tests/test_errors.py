"""One exception tree, one envelope."""

from __future__ import annotations

import pytest

from modelhost import errors


def test_every_error_code_is_unique_and_maps_back_to_its_class() -> None:
    classes = [errors.ModelhostError, *errors._all_subclasses(errors.ModelhostError)]
    codes = [c.code for c in classes if c is not errors.InternalError]
    assert len(codes) == len(set(codes))
    for cls in classes:
        if cls is not errors.InternalError:
            assert errors.ERRORS_BY_CODE[cls.code] is cls


def test_the_envelope_has_exactly_error_code_message_and_request_id() -> None:
    body = errors.error_body(errors.ModelNotFound("There is no model 'x'."), "RID")
    assert body == {
        "error": {"code": "model_not_found", "message": "There is no model 'x'."},
        "request_id": "RID",
    }


def test_unexpected_errors_never_show_their_message_to_clients() -> None:
    body = errors.error_body(errors.InternalError("password=hunter2 in /secret/path"), "RID")
    assert "hunter2" not in body["error"]["message"]
    assert body["error"]["code"] == "internal_error"


@pytest.mark.parametrize(
    "cls",
    [
        errors.QueueFull,
        errors.ModelError,
        errors.InvalidArguments,
        errors.BundleTooLarge,
        errors.ModelTimeout,
        errors.EnvironmentFailed,
        errors.EnvironmentNotFound,
    ],
)
def test_an_envelope_turns_back_into_the_same_exception_class(
    cls: type[errors.ModelhostError],
) -> None:
    rebuilt = errors.error_from_body(cls.status, errors.error_body(cls("why"), "RID"))
    assert type(rebuilt) is cls
    assert rebuilt.message == "why"
    assert rebuilt.request_id == "RID"  # type: ignore[attr-defined]


def test_an_unknown_code_falls_back_to_the_class_for_its_status() -> None:
    rebuilt = errors.error_from_body(404, {"error": {"code": "future_thing", "message": "m"}})
    assert isinstance(rebuilt, errors.NotFound)


def test_a_body_without_an_envelope_still_becomes_an_error_that_names_the_status() -> None:
    rebuilt = errors.error_from_body(502, "<html>bad gateway</html>")
    assert "HTTP 502" in rebuilt.message
