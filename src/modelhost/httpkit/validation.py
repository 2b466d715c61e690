"""What a management request that FastAPI could not read or validate is told.

Each message names the place of the wrong value (``query.format``, ``path.number``, or a body
field such as ``version``) and says what to send there, chosen by the kind of pydantic error,
never by route: ``Invalid request: path.number: must be a whole number such as 3, not 'abc'.``
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from modelhost import errors

#: the advice invocation URLs give for a body that is not JSON (``gateway/app.py``)
SEND_JSON = "send the body as JSON with 'Content-Type: application/json'"

_WHOLE = "must be a whole number such as 3"
_NUMBER = "must be a number such as 2.5"
_TIME = "must be a date or time such as 2026-12-01 or 2026-12-01T09:30Z"

#: what to send instead, by the type of pydantic error (``ctx`` fills the braces)
_SEND: dict[str, str] = {
    "int_type": _WHOLE,
    "int_parsing": _WHOLE,
    "int_from_float": _WHOLE,
    "float_type": _NUMBER,
    "float_parsing": _NUMBER,
    "finite_number": "must be a finite number such as 2.5",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string (in double quotes in JSON)",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be {ge} or more",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be {le} or less",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
    "dict_type": "must be a JSON object ({{...}})",
    "model_type": "must be a JSON object ({{...}})",
    "model_attributes_type": "must be a JSON object ({{...}})",
    "list_type": "must be a JSON array ([...])",
    "datetime_type": _TIME,
    "datetime_parsing": _TIME,
    "datetime_from_date_parsing": _TIME,
    "date_type": _TIME,
    "date_parsing": _TIME,
    "date_from_datetime_parsing": _TIME,
    "none_required": "must be null",
}

#: a pattern that only lists choices, such as ``^(json|csv)$``
_CHOICES = re.compile(r"^\^?\(?([\w.-]+(?:\|[\w.-]+)+)\)?\$?$")


def problem(exc: RequestValidationError, content_type: str | None) -> errors.ModelhostError:
    """The error to answer for ``exc``; ``content_type`` is the request's header, if any."""
    items: Sequence[dict[str, Any]] = exc.errors()
    for item in items:
        loc = tuple(item.get("loc", ()))
        if item.get("type") == "json_invalid":  # loc is ("body", the character's position)
            why = (item.get("ctx") or {}).get("error", "invalid JSON")
            return errors.BadRequest(
                f"The request body is not valid JSON ({why} at character {loc[-1]}); send a "
                "JSON object with 'Content-Type: application/json'."
            )
        if loc == ("body",) and isinstance(item.get("input"), bytes):
            # FastAPI reads a body as JSON only when its Content-Type says so: this one did not
            # (curl -d sends application/x-www-form-urlencoded)
            return errors.UnsupportedMediaType(unsupported_media_type(content_type))
    return errors.BadRequest("Invalid request: " + "; ".join(map(_describe, items)) + ".")


def unsupported_media_type(content_type: str | None) -> str:
    """The message for a JSON route sent a body of another type, in invocation URLs' words."""
    if not content_type:
        return f"The request has a body but no Content-Type; {SEND_JSON}."
    return f"Content-Type '{content_type}' is not supported; {SEND_JSON}."


def unreadable_body(cause: BaseException | None) -> str | None:
    """The message for a JSON body that FastAPI failed to parse for ``cause`` (it answers a bare
    "There was an error parsing the body"), or None if the cause is not the body's."""
    if isinstance(cause, RecursionError):
        return (
            "The request body is nested too deeply (more than about 1,000 levels of arrays and "
            "objects); send flatter JSON."
        )
    if isinstance(cause, UnicodeDecodeError):
        return (
            "The request body is not UTF-8 text; send JSON in UTF-8 with "
            "'Content-Type: application/json'."
        )
    return None


def _describe(item: dict[str, Any]) -> str:
    kind = str(item.get("type", ""))
    ctx = item.get("ctx") or {}
    where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    if kind == "string_pattern_mismatch":
        choices = _CHOICES.match(str(ctx.get("pattern", "")))
        send = (
            "must be " + _either(choices.group(1).split("|"))
            if choices
            else f"must match the pattern {ctx.get('pattern')}"
        )
    elif kind in _SEND and _fills(_SEND[kind], ctx):
        send = _SEND[kind].format(**ctx)
    else:  # pydantic's or a validator's own words: Field required, Unknown field 'x'…
        return f"{where}: {_own_words(item)}" if where else _own_words(item)
    send += _got(item.get("input"))
    return f"{where}: {send}" if where else f"the body {send}"


def _fills(template: str, ctx: dict[str, Any]) -> bool:
    """Whether ``ctx`` has every value ``template`` names (pydantic's ctx is not a contract)."""
    return all(name in ctx for _, name, _, _ in string.Formatter().parse(template) if name)


def _either(choices: list[str]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def _own_words(item: dict[str, Any]) -> str:
    message = str(item.get("msg", "invalid"))
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _got(value: Any) -> str:
    """``, not 'abc'``: the value that was sent, when it is short enough to show."""
    if isinstance(value, str):
        return f", not '{value}'" if len(value) <= 40 else ""
    if value is None or isinstance(value, bool | int | float):
        return ", not " + json.dumps(value)
    if isinstance(value, list | dict):
        shown = json.dumps(value, ensure_ascii=False)
        return f", not {shown}" if len(shown) <= 40 else ""
    return ""
