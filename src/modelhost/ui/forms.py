"""Reading the UI's forms: every value a user typed, checked, with a message in plain words."""

from __future__ import annotations

from starlette.datastructures import FormData

from modelhost import errors


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def optional_int(form: FormData, name: str, what: str) -> int | None:
    raw = field(form, name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise errors.BadRequest(f"{what} must be a whole number, not '{raw}'.") from None


def required_int(form: FormData, name: str, what: str) -> int:
    value = optional_int(form, name, what)
    if value is None:
        raise errors.BadRequest(f"Enter {what.lower()}.")
    return value


def optional_float(form: FormData, name: str, what: str) -> float | None:
    raw = field(form, name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise errors.BadRequest(f"{what} must be a number of seconds, not '{raw}'.") from None
