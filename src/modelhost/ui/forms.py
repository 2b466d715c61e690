"""Reading the UI's forms: every value a user typed, checked, with a message in plain words."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from modelhost import errors

#: Limits on a form's parts, whatever its size: the publish wizard, the largest form, has a
#: dozen fields and one file (which goes to a temporary file on disk as it arrives).
MAX_FIELDS = 64
MAX_FILES = 1
MAX_FIELD_BYTES = 1024 * 1024


async def read(request: Request) -> FormData:
    """The request's form, within the limits above; read once, so every reader gets these."""
    try:
        return await request.form(
            max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES
        )
    except HTTPException as exc:  # Starlette's answer to a form it cannot or will not parse
        raise errors.BadRequest(f"The form was refused: {exc.detail}") from None


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
