"""The base of every JSON request body of the management API: strict and closed.

Strict, so that ``true`` is not version 1 nor ``"yes"`` a boolean (an integer is still a
number); closed, so that a misspelt field is refused by name instead of changing nothing.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class RequestBody(BaseModel):
    """A request body; subclasses declare its fields.

    >>> class Deploy(RequestBody):
    ...     version: int
    >>> Deploy.model_validate({"version": True})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Deploy
    ...
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(key) for key in data if key not in cls.model_fields)
            if unknown:
                names = ", ".join(f"'{key}'" for key in unknown)
                what = f"Unknown field {names}" if len(unknown) == 1 else f"Unknown fields {names}"
                known = ", ".join(cls.model_fields)
                raise PydanticCustomError(
                    "unknown_field", "{message}", {"message": f"{what}; the fields are: {known}"}
                )
        return data
